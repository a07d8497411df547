"""End to end: requests from different Gunicorn workers are answered by one shared model call."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.support.processes import (
    PYTHON,
    ROOT,
    base_env,
    free_port,
    new_authkey,
    start_gunicorn,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _png(value: int, height: int = 8, width: int = 8) -> bytes:
    import cv2  # noqa: PLC0415

    ok, encoded = cv2.imencode(".png", np.full((height, width, 3), value, np.uint8))
    assert ok
    return encoded.tobytes()


def test_requests_from_several_workers_share_a_model_call(tmp_path: Path) -> None:
    key = new_authkey()
    address = str(tmp_path / "model.sock")
    # A real manager server and batcher around a slow NumPy model (0.3 s per call).
    with (tmp_path / "fake.log").open("wb") as log:
        fake = subprocess.Popen(
            [
                PYTHON,
                str(ROOT / "tests" / "support" / "fake_model_server.py"),
                address,
                "--delay-s",
                "0.3",
            ],
            env=base_env(MODEL_SERVER_AUTHKEY=key),
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert fake.stdout is not None and fake.stdout.readline().strip() == b"ready"
        port = free_port()
        # One thread per worker: a worker can have only one request in flight, so a model
        # call holding two or more requests necessarily served several workers at once.
        gunicorn = start_gunicorn(
            base_env(MODEL_SERVER_ADDRESS=address, MODEL_SERVER_AUTHKEY=key),
            tmp_path / "gunicorn.log",
            port,
            "--workers",
            "3",
            "--threads",
            "1",
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base_url, timeout_s=60, service=gunicorn)
            values = list(range(0, 240, 10))

            def post(value: int) -> tuple[int, list[dict[str, object]]]:
                response = requests.post(
                    f"{base_url}/predict?top_k=4",
                    files={"file": ("x.png", _png(value))},
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                return value, response.json()["predictions"]

            with ThreadPoolExecutor(6) as pool:
                answers = dict(pool.map(post, values))
            calls = requests.get(f"{base_url}/readyz", timeout=10).json()["model_calls"]
            assert sum(calls) >= len(values)
            assert max(calls) >= 2, f"no model call served more than one worker: {calls}"
            assert len(calls) < len(values)
            # Each caller got its own result: same as asking alone.
            for value in (0, 120, 230):
                assert post(value)[1] == answers[value]
        finally:
            gunicorn.stop()
            fake.terminate()
            fake.wait(10)
            fake.stdout.close()
