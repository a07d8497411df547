"""End to end: a model repository under real Gunicorn; SIGHUP to the master swaps versions."""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

import pytest
import requests

from tests.conftest import TINY_CLASSES
from tests.support.processes import base_env, free_port, start_gunicorn, wait_ready, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _readyz(base_url: str) -> dict[str, object]:
    return requests.get(f"{base_url}/readyz", timeout=10).json()  # type: ignore[no-any-return]


def test_sighup_to_the_master_makes_the_private_model_server_serve_a_new_version(
    tiny_model: Path, tmp_path: Path, photo_jpeg: bytes
) -> None:
    root = tmp_path / "tiny"
    (root / "1").mkdir(parents=True)
    shutil.copy(tiny_model, root / "1" / "model.keras")
    port = free_port()
    # MODEL_POLL_S=0: only SIGHUP makes it look.
    env = base_env(MODEL_PATH=str(root), MODEL_POLL_S="0")
    gunicorn = start_gunicorn(env, tmp_path / "gunicorn.log", port, "--workers", "2")
    base_url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(base_url, timeout_s=180, service=gunicorn)
        assert (ready["model"], ready["version"], ready["versions"]) == ("tiny", "1", ["1"])

        staging = root / ".tmp-2"
        staging.mkdir()
        shutil.copy(tiny_model, staging / "model.keras")
        labels = [f"v2_class_{index}" for index in range(TINY_CLASSES)]
        (staging / "labels.txt").write_text("\n".join(labels) + "\n")
        staging.rename(root / "2")
        gunicorn.signal(signal.SIGHUP)
        wait_until(lambda: _readyz(base_url).get("version") == "2", 120, "version 2 in /readyz")

        answer = requests.post(
            f"{base_url}/predict", files={"file": ("p.jpg", photo_jpeg)}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == "2"
        assert body["predictions"][0]["label"].startswith("v2_class_")
        assert requests.get(f"{base_url}/v2/models/tiny", timeout=10).json()["versions"] == ["2"]
        assert requests.get(f"{base_url}/v2/models/tiny/versions/1", timeout=10).status_code == 404
        metrics = requests.get(f"{base_url}/metrics", timeout=10).text
        # The pool labels each model server's samples with its replica.
        assert re.search(
            r'^onemodel_model_version_info\{[^}]*version="2"[^}]*\} 1\.0$', metrics, re.M
        )
        assert re.search(r"^onemodel_model_swaps_total(\{[^}]*\})? 1\.0$", metrics, re.M)
        info = _readyz(base_url)
        assert info["versions"] == ["1", "2"] and info["load_count"] == 2
    finally:
        gunicorn.stop()
    assert "asking the model server to look for new model versions" in gunicorn.log()
