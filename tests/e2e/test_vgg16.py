"""End to end with the default model: VGG16 (random weights: no download here) under Gunicorn."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from onemodel.model_server.labels import imagenet_labels
from tests.support.processes import (
    base_env,
    free_port,
    maps_ml_framework,
    process_tree,
    start_gunicorn,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_vgg16_random_weights_served_by_two_workers(tmp_path: Path, photo_jpeg: bytes) -> None:
    port = free_port()
    gunicorn = start_gunicorn(
        base_env(MODEL_WEIGHTS="random"), tmp_path / "gunicorn.log", port, "--workers", "2"
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        info = wait_ready(base_url, timeout_s=300, service=gunicorn)
        assert info["model"] == "vgg16"
        assert info["input_size"] == [224, 224]
        assert info["num_classes"] == 1000
        assert info["preprocess"] == "caffe"
        response = requests.post(
            f"{base_url}/predict",
            files={"file": ("coffee.jpg", photo_jpeg, "image/jpeg")},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "vgg16"
        labels = imagenet_labels()
        assert len(body["predictions"]) == 5
        for item in body["predictions"]:
            assert item["label"] == labels[item["index"]]
        hello = requests.post(
            f"{base_url}/hello",
            files={"file": ("coffee.jpg", photo_jpeg, "image/jpeg")},
            timeout=60,
        )
        assert hello.text.strip() == body["predictions"][0]["label"]
        holders = [pid for pid in process_tree(gunicorn.pid) if maps_ml_framework(pid)]
        assert holders == [info["pid"]]
        assert requests.get(f"{base_url}/readyz", timeout=10).json()["load_count"] == 1
    finally:
        gunicorn.stop()
    assert "MEANINGLESS" in gunicorn.log()  # random weights are announced loudly
