"""OpenVINO in the real deployment: /readyz reports it, a killed model server comes back warm.

Real Gunicorn with its embedded model server (the tiny model) and a fresh converted-model
cache. Measured figures are printed and merged into tests/artifacts/engines.json.
"""

from __future__ import annotations

import importlib.util
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from onemodel.model_server.verification import MAX_ABS_DIFFERENCE
from tests.support.processes import maps_tensorflow, wait_until
from tests.support.web import record_figures, start_web

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="no OpenVINO"),
]


def _predict(base_url: str, photo_jpeg: bytes) -> requests.Response:
    return requests.post(
        f"{base_url}/predict",
        files={"file": ("coffee.jpg", photo_jpeg, "image/jpeg")},
        timeout=60,
    )


def test_openvino_is_reported_and_a_killed_model_server_serves_again_from_the_cache(
    tiny_model: Path, tmp_path: Path, photo_jpeg: bytes
) -> None:
    env = {
        "MODEL_PATH": str(tiny_model),
        "MODEL_ENGINE": "openvino",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    started = time.monotonic()
    deployment = start_web(tmp_path, env, workers=1, threads=2, timeout_s=300)
    cold_ready_s = time.monotonic() - started
    try:
        cold = deployment.readyz()
        assert (cold["engine"], cold["precision"], cold["model_cache"]) == (
            "openvino",
            "float32",
            "miss",
        )
        agreement = cold["agreement"]
        assert agreement["images"] == 4 and agreement["top1"] == 1.0
        assert agreement["max_abs_diff"] <= MAX_ABS_DIFFERENCE
        first = _predict(deployment.base_url, photo_jpeg)
        assert first.status_code == 200, first.text

        old = psutil.Process(cold["pid"])
        old.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

        def serving_again() -> requests.Response | None:
            response = _predict(deployment.base_url, photo_jpeg)
            return response if response.status_code == 200 else None

        again = wait_until(serving_again, 120, "a 200 after the kill")
        kill_to_first_200_s = time.monotonic() - killed_at
        warm: dict[str, Any] = deployment.readyz()
        deployment.model_server()  # remember the new one for teardown
        assert warm["pid"] != cold["pid"]
        assert (warm["engine"], warm["model_cache"]) == ("openvino", "hit")
        assert warm["agreement"] == agreement  # measured at conversion, kept in the cache
        assert again.json()["predictions"] == first.json()["predictions"]
        # The warm model server never loaded TensorFlow.
        assert not maps_tensorflow(warm["pid"])
        figures = {
            "model": "tiny",
            "cold_deployment_ready_s": round(cold_ready_s, 2),
            "kill_to_first_200_s": round(kill_to_first_200_s, 2),
            "agreement": agreement,
        }
        record_figures("engines", "tiny_openvino_kill", figures)
    finally:
        deployment.stop()
