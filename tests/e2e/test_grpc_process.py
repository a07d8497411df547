"""End to end: the gRPC process and a fake model server: batches shared with HTTP, drain, limits."""

from __future__ import annotations

import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.support.processes import (
    base_env,
    free_port,
    new_authkey,
    start_gunicorn,
    wait_until,
)
from tests.support.web import start_fake_model_server, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZE = 8


def _png(value: int) -> bytes:
    import cv2  # noqa: PLC0415

    ok, encoded = cv2.imencode(".png", np.full((SIZE, SIZE, 3), value, np.uint8))
    assert ok
    return encoded.tobytes()


def _grpc_infer(client: Any, value: int, **kwargs: Any) -> np.ndarray:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    tensor = grpcclient.InferInput("image", [1, SIZE, SIZE, 3], "UINT8")
    tensor.set_data_from_numpy(np.full((1, SIZE, SIZE, 3), value, np.uint8))
    return np.asarray(client.infer("fake", [tensor], **kwargs).as_numpy("probabilities"))


def test_http_and_grpc_requests_share_model_calls(tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    key = new_authkey()
    address = str(tmp_path / "model.sock")
    # A real manager server and batcher around a slow NumPy model (0.3 s per call); it
    # records the mean pixel value of every image of every model call.
    fake = start_fake_model_server(address, key, tmp_path / "fake.log", "--delay-s", "0.3")
    grpc_port = free_port()
    web = start_web(
        tmp_path,
        {
            "MODEL_SERVER_ADDRESS": address,
            "MODEL_SERVER_AUTHKEY": key,
            "GRPC_PORT": str(grpc_port),
        },
        workers=2,
        threads=2,
    )
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        # HTTP sends odd values, gRPC even ones: each image says which way it came.
        http_values = list(range(1, 40, 2))
        grpc_values = list(range(2, 41, 2))

        def post(value: int) -> list[dict[str, Any]]:
            response = requests.post(
                web.url("/predict?top_k=4"), files={"file": ("x.png", _png(value))}, timeout=60
            )
            assert response.status_code == 200, response.text
            return list(response.json()["predictions"])

        with ThreadPoolExecutor(8) as pool:
            http = pool.map(post, http_values)
            grpc_answers = list(pool.map(lambda value: _grpc_infer(client, value), grpc_values))
            list(http)
        means = web.readyz()["model_call_means"]
        mixed = [call for call in means if {m % 2 for m in call} == {0, 1}]
        assert mixed, f"no model call held both HTTP and gRPC requests: {means}"
        served = sorted(m for call in means for m in call)
        assert set(http_values + grpc_values) <= set(served)
        # Each gRPC caller got its own image's answer: the same as asking alone.
        for value, answer in zip(grpc_values[:3], grpc_answers[:3], strict=True):
            np.testing.assert_allclose(_grpc_infer(client, value), answer, rtol=1e-6)
    finally:
        client.close()
        web.stop()
        fake.stop()


def test_grpc_calls_in_flight_finish_on_sigterm(tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    key = new_authkey()
    address = str(tmp_path / "model.sock")
    fake = start_fake_model_server(address, key, tmp_path / "fake.log", "--delay-s", "1.5")
    grpc_port = free_port()
    web = start_web(
        tmp_path,
        {"MODEL_SERVER_ADDRESS": address, "MODEL_SERVER_AUTHKEY": key, "GRPC_PORT": str(grpc_port)},
    )
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    results: list[Any] = []
    try:
        assert client.is_server_ready()
        calls = [
            threading.Thread(target=lambda: results.append(_safe_infer(client, 9)))
            for _ in range(3)
        ]
        for call in calls:
            call.start()
        # Wait until the model server holds the calls (its queue), then stop the service.
        wait_until(lambda: "model_call_means" in web.readyz(), 10, "readyz")
        wait_until(
            lambda: sum(len(c) for c in web.readyz()["model_call_means"]) >= 1, 10, "a model call"
        )
        web.gunicorn.signal(signal.SIGTERM)
        for call in calls:
            call.join(30)
        assert len(results) == 3
        assert all(isinstance(result, np.ndarray) for result in results), results
        assert web.gunicorn.process.wait(60) == 0
        assert "stopping: no new calls" in web.gunicorn.log()
    finally:
        client.close()
        web.stop()
        fake.stop()


def _safe_infer(client: Any, value: int) -> Any:
    try:
        return _grpc_infer(client, value, client_timeout=30)
    except Exception as error:  # the test reports what the client saw
        status = error.status() if hasattr(error, "status") else ""
        return f"{type(error).__name__} {status}: {error}"


def test_a_full_model_server_queue_is_resource_exhausted(tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    key = new_authkey()
    address = str(tmp_path / "model.sock")
    fake = start_fake_model_server(
        address, key, tmp_path / "fake.log", "--delay-s", "1.0", "--max-queue", "2"
    )
    grpc_port = free_port()
    web = start_web(
        tmp_path,
        {"MODEL_SERVER_ADDRESS": address, "MODEL_SERVER_AUTHKEY": key, "GRPC_PORT": str(grpc_port)},
    )
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda value: _safe_infer(client, value), range(8)))
        answered = [o for o in outcomes if isinstance(o, np.ndarray)]
        refused = [o for o in outcomes if "RESOURCE_EXHAUSTED" in str(o)]
        assert answered and refused, outcomes
        assert len(answered) + len(refused) == 8, outcomes
        text = requests.get(web.url("/metrics"), timeout=10).text
        assert 'onemodel_grpc_requests_total{code="RESOURCE_EXHAUSTED",method="ModelInfer"}' in text
    finally:
        client.close()
        web.stop()
        fake.stop()


def test_a_grpc_port_in_use_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    key = new_authkey()
    address = str(tmp_path / "model.sock")
    fake = start_fake_model_server(address, key, tmp_path / "fake.log")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        env = base_env(MODEL_SERVER_ADDRESS=address, MODEL_SERVER_AUTHKEY=key, GRPC_PORT=str(taken))
        gunicorn = start_gunicorn(env, tmp_path / "gunicorn.log", free_port())
        try:
            assert gunicorn.process.wait(60) == 1
            assert f"GRPC_PORT={taken}: something already listens there" in gunicorn.log()
        finally:
            gunicorn.stop()
            fake.stop()
