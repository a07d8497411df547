"""End to end: real model_server.py and real Gunicorn (2+ workers) as subprocesses, real HTTP."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import requests

from tests.conftest import TINY_CLASSES, TINY_SIZE
from tests.support.images import png_header_only
from tests.support.processes import (
    ROOT,
    Service,
    base_env,
    free_port,
    maps_ml_framework,
    new_authkey,
    process_tree,
    start_gunicorn,
    start_model_server,
    wait_ready,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROBE_CONFIG = ROOT / "tests" / "e2e" / "probe.gunicorn.conf.py"


class Deployment:
    """A running Gunicorn (and its model server) reachable at base_url."""

    def __init__(self, gunicorn: Service, base_url: str, probe_dir: Path) -> None:
        self.gunicorn = gunicorn
        self.base_url = base_url
        self.probe_dir = probe_dir

    def post(self, path: str, data: bytes, **kwargs: Any) -> requests.Response:
        return requests.post(
            f"{self.base_url}{path}",
            files={"file": ("photo.jpg", data, "image/jpeg")},
            timeout=60,
            **kwargs,
        )

    def worker_pids(self) -> list[int]:
        return [
            child.pid
            for child in psutil.Process(self.gunicorn.pid).children()
            if "gunicorn" in " ".join(child.cmdline())
        ]

    def pids_by_request_id(self) -> dict[str, int]:
        found = re.findall(r"pid=<(\d+)> request_id=([0-9a-f]{32})", self.gunicorn.log())
        return {request_id: int(pid) for pid, request_id in found}


@pytest.fixture(scope="module")
def deployment(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Gunicorn with 2 workers x 2 threads; the master starts the private model server."""
    directory = tmp_path_factory.mktemp("deployment")
    port = free_port()
    env = base_env(MODEL_PATH=str(tiny_model), ONEMODEL_PROBE_DIR=str(directory))
    gunicorn = start_gunicorn(
        env,
        directory / "gunicorn.log",
        port,
        "--workers",
        "2",
        "--threads",
        "2",
        config=PROBE_CONFIG,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, timeout_s=120, service=gunicorn)
        yield Deployment(gunicorn, base_url, directory)
    finally:
        gunicorn.stop()


def _spread_over_workers(deployment: Deployment, data: bytes) -> dict[int, list[dict[str, Any]]]:
    """Send requests in parallel until two workers have answered; group bodies by worker."""
    bodies: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            responses = list(
                pool.map(lambda _: deployment.post("/predict?top_k=10", data), range(16))
            )
            for response in responses:
                assert response.status_code == 200, response.text
                bodies[response.headers["X-Request-ID"]] = response.json()
            by_request = deployment.pids_by_request_id()
            pids = {by_request[request_id] for request_id in bodies if request_id in by_request}
            if len(pids) >= 2:
                break
    grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)

    # Gunicorn writes the access line just after the response: wait for every line.
    def all_logged() -> dict[str, int] | None:
        found = deployment.pids_by_request_id()
        return found if set(bodies) <= set(found) else None

    by_request = wait_until(all_logged, 10, "access log lines")
    for request_id, body in bodies.items():
        grouped[by_request[request_id]].append(body)
    return grouped


def test_every_worker_starts_its_image_decoder_before_the_first_upload(
    deployment: Deployment,
) -> None:
    # First in this module: no upload has reached the deployment yet.
    def decoders_of_every_worker() -> bool:
        workers = [psutil.Process(pid) for pid in deployment.worker_pids()]
        return len(workers) == 2 and all(
            any("onemodel.web.decoder_process" in child.cmdline() for child in worker.children())
            for worker in workers
        )

    wait_until(decoders_of_every_worker, 30, "a decoder process under each worker")


def test_one_model_shared_by_every_worker_and_no_tensorflow_in_workers(
    deployment: Deployment, photo_jpeg: bytes
) -> None:
    grouped = _spread_over_workers(deployment, photo_jpeg)
    workers = deployment.worker_pids()
    assert len(workers) == 2
    assert set(grouped) == set(workers), "requests did not reach every worker"

    # Identical predictions from every worker.
    answers = {json.dumps(body, sort_keys=True) for bodies in grouped.values() for body in bodies}
    assert len(answers) == 1

    # One model load, in one process: the model server, a child of the master.
    info = requests.get(f"{deployment.base_url}/readyz", timeout=10).json()
    assert info["load_count"] == 1
    tree = process_tree(deployment.gunicorn.pid)
    # The model server alone holds TensorFlow (or OpenVINO only, after a warm start).
    with_framework = [pid for pid in tree if maps_ml_framework(pid)]
    assert with_framework == [info["pid"]]
    assert info["pid"] not in workers

    # Real worker processes have not imported TensorFlow or Keras at all.
    for pid in workers:
        probe = json.loads((deployment.probe_dir / f"{pid}.json").read_text())
        assert probe["modules"] == [], f"worker {pid} imported {probe['modules']}"


def test_readyz_reports_the_model(deployment: Deployment) -> None:
    info = requests.get(f"{deployment.base_url}/readyz", timeout=10).json()
    assert info["ready"] is True
    assert info["model"] == "tiny"
    assert info["input_size"] == [TINY_SIZE, TINY_SIZE]
    assert info["num_classes"] == TINY_CLASSES
    assert info["uptime_s"] > 0
    assert isinstance(info["pid"], int)


def test_server_scores_equal_in_process_keras(
    deployment: Deployment, tiny_model: Path, photo_jpeg: bytes, photo_rgb: np.ndarray
) -> None:
    import cv2  # noqa: PLC0415
    import keras  # noqa: PLC0415  (this test process may load TensorFlow; workers may not)

    from onemodel.web.imaging import prepare_image  # noqa: PLC0415

    response = deployment.post(f"/predict?top_k={TINY_CLASSES}", photo_jpeg)
    assert response.status_code == 200
    served = {item["index"]: item["score"] for item in response.json()["predictions"]}

    array = prepare_image(photo_jpeg, (TINY_SIZE, TINY_SIZE), 10**9)
    # Colour order and decoding agree with an independent decoder (PIL decodes to RGB).
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    reference_rgb = np.asarray(Image.open(io.BytesIO(photo_jpeg)).convert("RGB"))
    reference = cv2.resize(reference_rgb, (TINY_SIZE, TINY_SIZE), interpolation=cv2.INTER_AREA)
    assert np.abs(reference.astype(int) - array.astype(int)).mean() < 2.0

    model = keras.models.load_model(tiny_model, compile=False)
    expected = np.asarray(model.predict_on_batch(array[np.newaxis].astype(np.float32)))[0]
    for index in range(TINY_CLASSES):
        assert served[index] == pytest.approx(float(expected[index]), abs=1e-5)


@pytest.mark.parametrize(
    ("files", "data", "headers", "status"),
    [
        ({"file": ("a.jpg", b"", "image/jpeg")}, None, None, 400),
        (
            {"file": ("a.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 100, "image/jpeg")},
            None,
            None,
            400,
        ),
        ({"file": ("a.jpg", b"just some text", "image/jpeg")}, None, None, 415),
        ({"file": ("a.jpg", b"<!doctype html><html></html>", "image/jpeg")}, None, None, 415),
        ({"file": ("a.jpg", b"%PDF-1.5\n%binary", "image/jpeg")}, None, None, 415),
        ({"picture": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")}, None, None, 400),
        (None, b"", {"Content-Type": "image/png"}, 400),
        (None, b"hello", {"Content-Type": "application/json"}, 415),
        (None, b"x" * (11 * 1024 * 1024), {"Content-Type": "image/jpeg"}, 413),
    ],
)
def test_bad_input_gets_its_status_and_the_service_keeps_serving(  # noqa: PLR0917
    deployment: Deployment,
    photo_jpeg: bytes,
    files: Any,
    data: bytes | None,
    headers: dict[str, str] | None,
    status: int,
) -> None:
    response = requests.post(
        f"{deployment.base_url}/predict", files=files, data=data, headers=headers, timeout=30
    )
    assert response.status_code == status
    assert set(response.json()["error"]) == {"code", "message"}
    assert deployment.post("/predict", photo_jpeg).status_code == 200


def test_decompression_bomb_over_http(deployment: Deployment) -> None:
    response = deployment.post("/predict", png_header_only(30000, 30000))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_pixels"


def test_hello_and_methods(deployment: Deployment, photo_jpeg: bytes) -> None:
    response = deployment.post("/hello", photo_jpeg)
    assert response.status_code == 200
    assert re.fullmatch(r"class_\d\n", response.text)
    assert requests.get(f"{deployment.base_url}/predict", timeout=10).status_code == 405


def test_embedded_model_server_is_restarted_when_killed(
    deployment: Deployment, photo_jpeg: bytes
) -> None:
    first = requests.get(f"{deployment.base_url}/readyz", timeout=10).json()
    workers = deployment.worker_pids()
    psutil.Process(first["pid"]).send_signal(signal.SIGKILL)
    started = time.monotonic()
    response = deployment.post("/predict", photo_jpeg)
    assert response.status_code in (200, 503)
    if response.status_code == 503:
        assert response.headers["Retry-After"]
    assert time.monotonic() - started < 2.0

    def back() -> dict[str, Any] | None:
        reply = requests.get(f"{deployment.base_url}/readyz", timeout=10)
        return (
            reply.json()
            if reply.status_code == 200 and reply.json()["pid"] != first["pid"]
            else None
        )

    second = wait_until(back, 120, "the restarted model server")
    assert second["load_count"] == 1
    # Each worker's pool uses it again once its own probe saw it ready (about 1 s).
    for _ in range(4):
        wait_until(
            lambda: deployment.post("/predict", photo_jpeg).status_code == 200,
            10,
            "a prediction from every worker after the restart",
        )
    assert deployment.worker_pids() == workers  # no worker was restarted


def test_external_model_server_goes_away_and_comes_back(
    tiny_model: Path, tmp_path: Path, photo_jpeg: bytes
) -> None:
    key = new_authkey()
    model_port, web_port = free_port(), free_port()
    address = f"127.0.0.1:{model_port}"
    server_env = base_env(
        MODEL_PATH=str(tiny_model), MODEL_SERVER_ADDRESS=address, MODEL_SERVER_AUTHKEY=key
    )
    model_server = start_model_server(server_env, tmp_path / "model1.log")
    web_env = base_env(MODEL_SERVER_ADDRESS=address, MODEL_SERVER_AUTHKEY=key)
    gunicorn = start_gunicorn(web_env, tmp_path / "gunicorn.log", web_port, "--workers", "2")
    base_url = f"http://127.0.0.1:{web_port}"
    try:
        wait_ready(base_url, timeout_s=120, service=gunicorn)
        master_children = sorted(child.pid for child in psutil.Process(gunicorn.pid).children())
        assert not any(maps_ml_framework(pid) for pid in process_tree(gunicorn.pid))

        model_server.stop()
        response = requests.get(f"{base_url}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.json()["ready"] is False
        assert "not running" in response.json()["reason"]
        assert key not in response.text
        predict = requests.post(
            f"{base_url}/predict", files={"file": ("a.jpg", photo_jpeg)}, timeout=10
        )
        assert predict.status_code == 503
        assert predict.headers["Retry-After"] == "1"

        model_server = start_model_server(server_env, tmp_path / "model2.log")
        wait_ready(base_url, timeout_s=120)
        # Each worker's pool uses the server again once its own probe has seen it ready
        # (MODEL_SERVER_PROBE_INTERVAL_S, 1 s): every worker serves within a few seconds.
        for _ in range(4):
            wait_until(
                lambda: (
                    requests.post(
                        f"{base_url}/predict", files={"file": ("a.jpg", photo_jpeg)}, timeout=30
                    ).status_code
                    == 200
                ),
                10,
                "a prediction after the model server came back",
            )
        # Gunicorn was not restarted: same master, same workers.
        assert gunicorn.process.poll() is None
        assert (
            sorted(child.pid for child in psutil.Process(gunicorn.pid).children())
            == master_children
        )
    finally:
        gunicorn.stop()
        model_server.stop()
    assert key not in gunicorn.log()
    assert key not in model_server.log()


def test_tcp_model_server_refuses_to_start_without_authkey(tmp_path: Path) -> None:
    server = start_model_server(
        base_env(MODEL_SERVER_ADDRESS=f"127.0.0.1:{free_port()}"), tmp_path / "m.log"
    )
    assert server.process.wait(60) == 2
    server.stop()
    assert "no authkey" in server.log()
    assert "Traceback" not in server.log()


def test_imagenet_weights_offline_give_a_clear_message(tmp_path: Path) -> None:
    env = base_env(
        MODEL_SERVER_ADDRESS=str(tmp_path / "m.sock"),
        MODEL_SERVER_AUTHKEY=new_authkey(),
        KERAS_HOME=str(tmp_path / "keras"),  # an empty cache: Keras must try to download
    )
    server = start_model_server(env, tmp_path / "m.log")
    assert server.process.wait(300) != 0
    server.stop()
    log = server.log()
    assert "could not download the VGG16 ImageNet weights" in log
    assert "MODEL_WEIGHTS=random" in log
    assert "Traceback" not in log


def _scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    response = requests.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_aggregate_every_worker_and_the_model_server(
    deployment: Deployment, photo_jpeg: bytes
) -> None:
    key = (
        "onemodel_http_requests_total",
        (("method", "POST"), ("route", "/predict"), ("status", "200")),
    )
    before = _scrape(deployment.base_url)
    grouped = _spread_over_workers(deployment, photo_jpeg)
    sent = sum(len(bodies) for bodies in grouped.values())
    assert len(grouped) >= 2
    scraped_during = []
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(deployment.post, "/predict", photo_jpeg) for _ in range(8)]
        scraped_during.append(_scrape(deployment.base_url))  # scraping under traffic works
        assert all(future.result().status_code == 200 for future in futures)
    after = _scrape(deployment.base_url)
    # Counts from both workers are summed: nothing lost, nothing doubled.
    assert after[key] - before.get(key, 0.0) == sent + 8
    # The model server's own samples, labelled by the pool with the replica they came from.
    replica = (("replica", "0"),)
    assert after[("onemodel_batch_size_count", replica)] > before.get(
        ("onemodel_batch_size_count", replica), 0.0
    )
    assert after[("onemodel_images_total", replica)] >= sent + 8
    assert after[("onemodel_model_loads_total", replica)] >= 1
    assert ("onemodel_queue_depth", replica) in after
    assert after[("onemodel_model_server_up", ())] == 1
    assert (
        "onemodel_http_request_duration_seconds_bucket",
        (("le", "+Inf"), ("route", "/predict")),
    ) in after
    assert scraped_during[0][("onemodel_model_server_up", ())] == 1
