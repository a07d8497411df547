"""End to end: the protocol's two official Python clients over REST and gRPC, on real processes.

Gunicorn (2 workers) starts the private model server with a small real Keras model and,
with GRPC_PORT set, the gRPC server process. tritonclient (http and grpc) runs here; the
KServe SDK runs in its own virtualenv (tests/support/kserve_probe.py, `make kserve-venv`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import TINY_CLASSES, TINY_SIZE
from tests.support import rest_spec
from tests.support.processes import ROOT, free_port, wait_until
from tests.support.web import WebDeployment, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny"
KSERVE_PYTHON = Path(os.environ.get("KSERVE_PYTHON", ROOT / ".venv-kserve" / "bin" / "python"))


@pytest.fixture(scope="module")
def deployment(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("protocol-clients")
    grpc_port = free_port()
    web = start_web(directory, {"MODEL_PATH": str(tiny_model), "GRPC_PORT": str(grpc_port)})
    web.grpc_target = f"127.0.0.1:{grpc_port}"  # type: ignore[attr-defined]
    try:
        yield web
    finally:
        web.stop()


@pytest.fixture(scope="module")
def predict_scores(deployment: WebDeployment, photo_jpeg: bytes) -> dict[str, Any]:
    """Every class score of the photo from our own API, POST /predict."""
    response = requests.post(
        deployment.url(f"/predict?top_k={TINY_CLASSES}"),
        files={"file": ("photo.jpg", photo_jpeg, "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    ranked = response.json()["predictions"]
    scores = np.zeros(TINY_CLASSES, np.float32)
    for item in ranked:
        scores[item["index"]] = item["score"]
    return {"scores": scores, "ranked": ranked}


@pytest.fixture(scope="module")
def photo_pixels(photo_jpeg: bytes) -> np.ndarray:
    """The photo as the model's input, prepared exactly as the server prepares uploads."""
    from onemodel.web.imaging import prepare_image  # noqa: PLC0415

    return prepare_image(photo_jpeg, (TINY_SIZE, TINY_SIZE), 10**9)


@pytest.fixture
def triton_grpc(deployment: Any) -> Iterator[Any]:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    client = grpcclient.InferenceServerClient(deployment.grpc_target)
    try:
        yield client
    finally:
        client.close()


def _requests_send(deployment: WebDeployment) -> rest_spec.Send:
    def send(method: str, path: str, body: bytes | None) -> rest_spec.Answer:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        response = requests.request(
            method, deployment.url(path), data=body, headers=headers, timeout=60
        )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return rest_spec.Answer(response.status_code, media_type, response.content)

    return send


def test_rest_spec_walk(deployment: WebDeployment, photo_pixels: np.ndarray) -> None:
    infer_body = {
        "id": "walk",
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": [1, TINY_SIZE, TINY_SIZE, 3],
                "data": photo_pixels.reshape(-1).tolist(),
            }
        ],
    }
    send = _requests_send(deployment)
    visited = rest_spec.walk(send, MODEL, "1", infer_body)
    assert len(visited) == 10  # 6 spec paths; 3 also without their version, /v2/ also as /v2
    rest_spec.walk_errors(send, MODEL, infer_body)


def _assert_classes(classes: list[str], ranked: list[dict[str, Any]]) -> None:
    parsed = [item.split(":", 2) for item in classes]
    assert [int(index) for _, index, _ in parsed] == [item["index"] for item in ranked[:3]]
    assert [label for _, _, label in parsed] == [item["label"] for item in ranked[:3]]


def test_kserve_sdk_over_rest_and_grpc(
    deployment: Any,
    photo_jpeg: bytes,
    photo_pixels: np.ndarray,
    predict_scores: dict[str, Any],
    tmp_path: Path,
) -> None:
    if not KSERVE_PYTHON.exists():
        message = f"no KServe SDK virtualenv at {KSERVE_PYTHON}: run `make kserve-venv`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    (tmp_path / "photo.jpg").write_bytes(photo_jpeg)
    np.save(tmp_path / "pixels.npy", photo_pixels[np.newaxis])
    config = {
        "model": MODEL,
        "jpeg": str(tmp_path / "photo.jpg"),
        "pixels": str(tmp_path / "pixels.npy"),
        "rest": deployment.base_url,
        "grpc": deployment.grpc_target,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [
            str(KSERVE_PYTHON),
            str(ROOT / "tests" / "support" / "kserve_probe.py"),
            str(tmp_path / "config.json"),
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    seen = json.loads(done.stdout)
    expected = predict_scores["scores"]
    for transport in ("rest", "grpc"):
        got = seen[transport]
        assert got["live"] is True and got["ready"] is True and got["model_ready"] is True
        for binary in (False, True):
            answer = got[f"pixels_binary_{binary}"]
            assert answer["model_name"] == MODEL and answer["id"] == f"pixels-{binary}"
            np.testing.assert_allclose(answer["probabilities"][0], expected, atol=1e-5)
        np.testing.assert_allclose(got["jpeg"][0], expected, atol=1e-5)
        _assert_classes(got["classes"], predict_scores["ranked"])
    assert seen["rest"]["other_model_ready"] is False
    assert seen["rest"]["unknown_model"]["status"] == 404
    assert "unknown model 'no-such-model'" in seen["rest"]["unknown_model"]["message"]
    grpc_seen = seen["grpc"]
    assert grpc_seen["server_metadata"]["name"] == "onemodel"
    assert grpc_seen["model_metadata"]["inputs"][0] == {
        "name": "image",
        "datatype": "UINT8",
        "shape": [-1, TINY_SIZE, TINY_SIZE, 3],
    }
    errors = grpc_seen["errors"]
    assert errors["unknown_model"]["code"] == "NOT_FOUND"
    assert errors["not_an_image"]["code"] == "INVALID_ARGUMENT"
    assert errors["deadline"]["code"] == "DEADLINE_EXCEEDED"


def test_tritonclient_grpc(
    triton_grpc: Any, photo_jpeg: bytes, photo_pixels: np.ndarray, predict_scores: dict[str, Any]
) -> None:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    assert triton_grpc.is_server_live() and triton_grpc.is_server_ready()
    assert triton_grpc.is_model_ready(MODEL)
    metadata = triton_grpc.get_model_metadata(MODEL, as_json=True)
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": ["-1", str(TINY_CLASSES)]}
    ]
    batch = np.stack([photo_pixels, photo_pixels[::-1]])
    tensor = grpcclient.InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch)
    result = triton_grpc.infer(MODEL, [tensor], request_id="grpc-1")
    assert result.get_response().id == "grpc-1"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, TINY_CLASSES)
    np.testing.assert_allclose(probabilities[0], predict_scores["scores"], atol=1e-5)
    assert not np.allclose(probabilities[1], probabilities[0], atol=1e-5)

    files = grpcclient.InferInput("image_bytes", [1], "BYTES")
    files.set_data_from_numpy(np.array([photo_jpeg], dtype=object))
    output = grpcclient.InferRequestedOutput("probabilities", class_count=3)
    classes = triton_grpc.infer(MODEL, [files], outputs=[output]).as_numpy("probabilities")
    _assert_classes([item.decode() for item in classes[0]], predict_scores["ranked"])

    with pytest.raises(InferenceServerException) as caught:
        triton_grpc.infer("no-such-model", [files])
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as caught:
        triton_grpc.infer(MODEL, [files], client_timeout=0.0005)
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_grpc_process_is_counted_and_supervised(deployment: Any, triton_grpc: Any) -> None:
    assert triton_grpc.is_server_live()
    text = requests.get(deployment.url("/metrics"), timeout=10).text
    # The gRPC process's figures, summed into the web tier's /metrics.
    assert 'onemodel_grpc_requests_total{code="OK",method="ServerLive"}' in text
    assert "method=ServerLive code=OK" in deployment.gunicorn.log()
    assert deployment.readyz()["grpc_port"] == int(deployment.grpc_target.rsplit(":", 1)[1])
    first = deployment.grpc_server()
    assert first is not None
    # No TensorFlow in the gRPC process: it is a client of the model server.
    assert "libtensorflow" not in Path(f"/proc/{first.pid}/maps").read_text()
    first.kill()
    first.wait(10)
    # The master notices and starts another; meanwhile /readyz says not ready, not 500.
    restarted = wait_until(
        lambda: (server := deployment.grpc_server()) is not None and server.pid != first.pid,
        30,
        "a new gRPC server process",
    )
    assert restarted
    wait_until(triton_grpc.is_server_ready, 30, "the new gRPC server to answer")
    assert deployment.wait_ready()["grpc_port"]
