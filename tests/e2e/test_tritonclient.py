"""End to end: the official Open Inference Protocol client (tritonclient) against Gunicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import TINY_CLASSES, TINY_SIZE
from tests.support.processes import base_env, free_port, start_gunicorn, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny"


@pytest.fixture(scope="module")
def base_url(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Gunicorn with 2 workers; its master starts the private model server."""
    directory = tmp_path_factory.mktemp("tritonclient")
    port = free_port()
    env = base_env(MODEL_PATH=str(tiny_model))
    gunicorn = start_gunicorn(env, directory / "gunicorn.log", port, "--workers", "2")
    url = f"127.0.0.1:{port}"
    try:
        wait_ready(f"http://{url}", timeout_s=120, service=gunicorn)
        yield url
    finally:
        gunicorn.stop()


@pytest.fixture
def client(base_url: str) -> Iterator[Any]:
    import tritonclient.http as httpclient  # noqa: PLC0415

    triton = httpclient.InferenceServerClient(
        base_url, concurrency=1, connection_timeout=10.0, network_timeout=60.0
    )
    try:
        yield triton
    finally:
        triton.close()


@pytest.fixture(scope="module")
def predict_scores(base_url: str, photo_jpeg: bytes) -> dict[str, Any]:
    """Every class score of the photo from our own API, POST /predict?top_k=10."""
    response = requests.post(
        f"http://{base_url}/predict?top_k={TINY_CLASSES}",
        files={"file": ("photo.jpg", photo_jpeg, "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    scores = np.zeros(TINY_CLASSES, np.float32)
    for item in predictions:
        scores[item["index"]] = item["score"]
    return {"scores": scores, "ranked": predictions}


@pytest.fixture(scope="module")
def photo_pixels(photo_jpeg: bytes) -> np.ndarray:
    """The photo as the model's input, prepared exactly as the server prepares uploads."""
    from onemodel.web.imaging import prepare_image  # noqa: PLC0415

    return prepare_image(photo_jpeg, (TINY_SIZE, TINY_SIZE), 10**9)


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("no-such-model")
    server = client.get_server_metadata()
    assert server["name"] == "onemodel"
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert {
        "name": "image",
        "datatype": "UINT8",
        "shape": [-1, TINY_SIZE, TINY_SIZE, 3],
    } in metadata["inputs"]
    assert {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]} in metadata["inputs"]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, TINY_CLASSES]}
    ]


def test_unknown_model_error_reaches_the_client(client: Any) -> None:
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no-such-model")
    assert caught.value.status() == "404"
    # The client reads the protocol's {"error": "<message>"} shape.
    assert "unknown model 'no-such-model'" in caught.value.message()


@pytest.mark.parametrize("binary_data", [True, False])
def test_infer_uint8_tensor_equals_predict(
    client: Any, photo_pixels: np.ndarray, predict_scores: dict[str, Any], binary_data: bool
) -> None:
    import tritonclient.http as httpclient  # noqa: PLC0415

    batch = np.stack([photo_pixels, photo_pixels[::-1]])
    tensor = httpclient.InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=binary_data)
    output = httpclient.InferRequestedOutput("probabilities", binary_data=binary_data)
    result = client.infer(MODEL, [tensor], outputs=[output], request_id=f"binary-{binary_data}")
    assert result.get_response()["id"] == f"binary-{binary_data}"
    assert ("parameters" in result.get_output("probabilities")) is binary_data
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (2, TINY_CLASSES)
    np.testing.assert_allclose(probabilities[0], predict_scores["scores"], rtol=0, atol=1e-5)
    # The second image is a different picture: a different answer, from the same batch.
    assert not np.allclose(probabilities[1], probabilities[0], atol=1e-5)


def test_infer_encoded_jpeg_equals_predict(
    client: Any, photo_jpeg: bytes, predict_scores: dict[str, Any]
) -> None:
    import tritonclient.http as httpclient  # noqa: PLC0415

    files = np.array([photo_jpeg], dtype=object)
    tensor = httpclient.InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(files, binary_data=True)
    result = client.infer(MODEL, [tensor])  # no outputs named: every output, in binary
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, TINY_CLASSES)
    np.testing.assert_allclose(probabilities[0], predict_scores["scores"], rtol=0, atol=1e-5)


def test_classification_output(
    client: Any, photo_jpeg: bytes, predict_scores: dict[str, Any]
) -> None:
    import tritonclient.http as httpclient  # noqa: PLC0415

    tensor = httpclient.InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo_jpeg], dtype=object), binary_data=True)
    output = httpclient.InferRequestedOutput("probabilities", class_count=3)
    result = client.infer(MODEL, [tensor], outputs=[output])
    classes = result.as_numpy("probabilities")
    assert classes.shape == (1, 3)
    parsed = [item.decode().split(":", 2) for item in classes[0]]
    expected = predict_scores["ranked"][:3]
    assert [int(index) for _, index, _ in parsed] == [item["index"] for item in expected]
    assert [label for _, _, label in parsed] == [item["label"] for item in expected]
    assert [float(value) for value, _, _ in parsed] == pytest.approx(
        [item["score"] for item in expected], abs=1e-5
    )
