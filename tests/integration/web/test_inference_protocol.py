"""The Open Inference Protocol (KServe v2) API through the test client, with a fake predictor."""

from __future__ import annotations

import json
import struct
from typing import Any

import cv2
import numpy as np
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from onemodel import __version__
from onemodel.errors import InferenceTimeoutError, ModelUnavailableError, OverloadedError
from onemodel.settings import Settings
from onemodel.web.app import create_app
from tests.support import rest_spec
from tests.support.fakes import CLASSES, HEIGHT, WIDTH, FakePredictor, expected_scores

INFER = "/v2/models/fake/infer"


@pytest.fixture
def predictor() -> FakePredictor:
    return FakePredictor(max_batch_size=4)


@pytest.fixture
def client(predictor: FakePredictor) -> FlaskClient:
    settings = Settings(max_upload_bytes=200_000, max_image_pixels=1_000_000)
    return create_app(settings, predictor=predictor).test_client()


def _pixels(*reds: int) -> np.ndarray:
    images = np.zeros((len(reds), HEIGHT, WIDTH, 3), np.uint8)
    for index, red in enumerate(reds):
        images[index, ..., 0] = red
        images[index, ..., 2] = 255 - red
    return images


def _jpeg(red: int, size: tuple[int, int] = (40, 60)) -> bytes:
    rgb = np.zeros((*size, 3), np.uint8)
    rgb[..., 0] = red
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100]
    )
    assert ok
    return encoded.tobytes()


def _bytes_tensor(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def _post_binary(
    client: FlaskClient, header: dict[str, Any], *blobs: bytes, path: str = INFER
) -> TestResponse:
    text = json.dumps(header).encode()
    return client.post(
        path,
        data=text + b"".join(blobs),
        headers={"Inference-Header-Content-Length": str(len(text))},
    )


def _split(response: TestResponse) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["Inference-Header-Content-Length"])
    body = response.get_data()
    return json.loads(body[:length]), body[length:]


def _assert_protocol_error(response: TestResponse, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    # The protocol's error shape: one string, not our {"code", "message"} object.
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"]
    return body["error"]  # type: ignore[no-any-return]


def _image_input(images: np.ndarray) -> dict[str, Any]:
    return {
        "name": "image",
        "datatype": "UINT8",
        "shape": list(images.shape),
        "data": images.tolist(),
    }


# Health and metadata.


def _assert_not_ready(response: TestResponse, fragment: str, **body: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.headers["Retry-After"] == "1"
    # The protocol's ready body (false), and KServe's "error" saying why.
    parsed = response.get_json()
    assert parsed == {**body, "ready": False, "error": parsed["error"]}
    assert fragment in parsed["error"]


def test_live_and_ready(client: FlaskClient, predictor: FakePredictor) -> None:
    for path, body in (("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True})):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == "application/json"
        assert response.get_json() == body
    predictor.ready = False
    _assert_not_ready(client.get("/v2/health/ready"), "loading")
    predictor.error = ModelUnavailableError("cannot reach the model server")
    _assert_not_ready(client.get("/v2/health/ready"), "cannot reach")
    # Liveness does not depend on the model server.
    assert client.get("/v2/health/live").get_json() == {"live": True}


def test_server_metadata(client: FlaskClient) -> None:
    response = client.get("/v2")
    assert response.status_code == 200
    assert response.get_json() == {
        "name": "onemodel",
        "version": __version__,
        "extensions": ["binary_tensor_data", "classification"],
    }


@pytest.mark.parametrize("path", ["/v2/models/fake", "/v2/models/fake/versions/1"])
def test_model_metadata(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.get_json() == {
        "name": "fake",
        "versions": ["1"],
        "platform": "tensorflow_keras",
        "inputs": [
            {"name": "image", "datatype": "UINT8", "shape": [-1, HEIGHT, WIDTH, 3]},
            {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, CLASSES]}],
    }


@pytest.mark.parametrize("path", ["/v2/models/fake/ready", "/v2/models/fake/versions/1/ready"])
def test_model_ready(client: FlaskClient, predictor: FakePredictor, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == {"name": "fake", "ready": True}
    predictor.ready = False
    _assert_not_ready(client.get(path), "loading", name="fake")


def test_rest_spec_walk(client: FlaskClient, predictor: FakePredictor) -> None:
    """Every endpoint of the protocol's OpenAPI file: statuses, media types, body schemas."""

    def send(method: str, path: str, body: bytes | None) -> rest_spec.Answer:
        response = client.open(
            path, method=method, data=body, content_type="application/json" if body else None
        )
        return rest_spec.Answer(response.status_code, response.mimetype, response.get_data())

    infer_body = {"inputs": [_image_input(_pixels(30))]}
    assert len(rest_spec.walk(send, "fake", "1", {**infer_body, "id": "walk"})) == 10
    rest_spec.walk_errors(send, "fake", infer_body)
    predictor.ready = False
    rest_spec.walk_not_ready(send, "fake")


@pytest.mark.parametrize(
    ("method", "path", "fragment"),
    [
        ("GET", "/v2/models/other", "unknown model 'other'"),
        ("GET", "/v2/models/other/ready", "unknown model 'other'"),
        ("POST", "/v2/models/other/infer", "unknown model 'other'"),
        ("GET", "/v2/models/fake/versions/2", "no version '2'"),
        ("GET", "/v2/models/fake/versions/2/ready", "no version '2'"),
        ("POST", "/v2/models/fake/versions/2/infer", "no version '2'"),
        ("GET", "/v2/models/fake/stats", "no such endpoint"),
        ("GET", "/v2/nothing/here", "no such endpoint"),
    ],
)
def test_unknown_models_versions_and_paths_are_404(
    client: FlaskClient, method: str, path: str, fragment: str
) -> None:
    _assert_protocol_error(
        client.open(path, method=method, json=_image_input(_pixels(1))), 404, fragment
    )


def test_wrong_method_is_405_with_allow(client: FlaskClient) -> None:
    response = client.get(INFER)
    _assert_protocol_error(response, 405)
    assert response.headers["Allow"] == "POST"
    response = client.post("/v2/health/live")
    _assert_protocol_error(response, 405)
    assert "GET" in response.headers["Allow"]


def test_our_own_api_keeps_its_error_shape(client: FlaskClient) -> None:
    response = client.post("/predict", data=b"", content_type="image/jpeg")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


# Inference: JSON and binary, both ways.


def test_infer_json_nested_uint8(client: FlaskClient, predictor: FakePredictor) -> None:
    images = _pixels(50, 200)
    response = client.post(INFER, json={"id": "abc", "inputs": [_image_input(images)]})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert "Inference-Header-Content-Length" not in response.headers
    body = response.get_json()
    assert body["id"] == "abc"
    assert body["model_name"] == "fake" and body["model_version"] == "1"
    (output,) = body["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32"
    assert output["shape"] == [2, CLASSES]
    scores = np.array(output["data"], np.float32).reshape(2, CLASSES)
    np.testing.assert_array_equal(scores, expected_scores(images))
    assert scores.argmax(axis=1).tolist() == [2, 8]
    # One model call for the whole batch, with the pixels as sent.
    assert len(predictor.seen) == 1
    np.testing.assert_array_equal(predictor.seen[0], images)


def test_infer_json_flat_data_and_versioned_path(client: FlaskClient) -> None:
    images = _pixels(100)
    request = _image_input(images) | {"data": images.reshape(-1).tolist()}
    response = client.post("/v2/models/fake/versions/1/infer", json={"inputs": [request]})
    assert response.status_code == 200
    assert "id" not in response.get_json()
    assert np.argmax(response.get_json()["outputs"][0]["data"]) == 4


def test_infer_binary_in_binary_out(client: FlaskClient, predictor: FakePredictor) -> None:
    images = _pixels(25, 75, 250)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": [3, HEIGHT, WIDTH, 3],
                "parameters": {"binary_data_size": images.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    response = _post_binary(client, header, images.tobytes())
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "application/octet-stream"
    result, binary = _split(response)
    (output,) = result["outputs"]
    assert output == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [3, CLASSES],
        "parameters": {"binary_data_size": 3 * CLASSES * 4},
    }
    assert "data" not in output
    scores = np.frombuffer(binary, "<f4").reshape(3, CLASSES)
    np.testing.assert_array_equal(scores, expected_scores(images))
    np.testing.assert_array_equal(predictor.seen[0], images)


def test_output_binary_flag_overrides_the_request_default(client: FlaskClient) -> None:
    images = _pixels(0)
    response = client.post(
        INFER,
        json={
            "inputs": [_image_input(images)],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
            "parameters": {"binary_data_output": True},
        },
    )
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert len(response.get_json()["outputs"][0]["data"]) == CLASSES


def test_binary_input_json_output(client: FlaskClient) -> None:
    images = _pixels(125)
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": [1, HEIGHT, WIDTH, 3],
                "parameters": {"binary_data_size": images.nbytes},
            }
        ]
    }
    response = _post_binary(client, header, images.tobytes())
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert np.argmax(response.get_json()["outputs"][0]["data"]) == 5


def test_infer_encoded_images_as_binary_bytes(
    client: FlaskClient, predictor: FakePredictor
) -> None:
    files = [_jpeg(50), _jpeg(150, size=(300, 200))]
    data = _bytes_tensor(*files)
    header = {
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    response = _post_binary(client, header, data)
    assert response.status_code == 200, response.get_data()
    _, binary = _split(response)
    scores = np.frombuffer(binary, "<f4").reshape(2, CLASSES)
    assert scores.argmax(axis=1).tolist() == [2, 6]
    # Decoded and resized as /predict does: one batch at the model's input size.
    (seen,) = predictor.seen
    assert seen.shape == (2, HEIGHT, WIDTH, 3) and seen.dtype == np.uint8
    np.testing.assert_array_equal(scores, expected_scores(seen))


def test_encoded_images_may_have_shape_n_by_1(client: FlaskClient) -> None:
    data = _bytes_tensor(_jpeg(100))
    tensor = {"name": "image_bytes", "datatype": "BYTES", "shape": [1, 1]}
    header = {"inputs": [tensor | {"parameters": {"binary_data_size": len(data)}}]}
    response = _post_binary(client, header, data)
    assert response.status_code == 200, response.get_data()
    assert np.argmax(response.get_json()["outputs"][0]["data"]) == 4


def test_infer_bytes_as_json_strings_are_utf8(client: FlaskClient) -> None:
    # JSON BYTES elements are strings; an encoded image is not text, so it is not an image.
    response = client.post(
        INFER,
        json={
            "inputs": [
                {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": ["not an image"]}
            ]
        },
    )
    _assert_protocol_error(response, 415, "image_bytes[0]", "not a supported image")


def test_classification_output(client: FlaskClient) -> None:
    images = _pixels(50, 200)
    response = client.post(
        INFER,
        json={
            "inputs": [_image_input(images)],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
        },
    )
    assert response.status_code == 200
    (output,) = response.get_json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 3]
    scores = expected_scores(images)
    rows = [output["data"][0:3], output["data"][3:6]]
    for row, row_scores in zip(rows, scores, strict=True):
        parsed = [item.split(":") for item in row]
        indices = [int(index) for _, index, _ in parsed]
        assert indices == np.argsort(-row_scores)[:3].tolist()
        assert [label for _, _, label in parsed] == [f"label_{index}" for index in indices]
        assert [float(value) for value, _, _ in parsed] == pytest.approx(
            row_scores[indices].tolist(), abs=1e-6
        )
    assert rows[0][0].split(":")[1] == "2" and rows[1][0].split(":")[1] == "8"


def test_classification_output_in_binary(client: FlaskClient) -> None:
    response = client.post(
        INFER,
        json={
            "inputs": [_image_input(_pixels(75))],
            "outputs": [
                {"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}}
            ],
        },
    )
    assert response.status_code == 200
    result, binary = _split(response)
    assert result["outputs"][0]["datatype"] == "BYTES"
    assert result["outputs"][0]["parameters"]["binary_data_size"] == len(binary)
    (length,) = struct.unpack_from("<I", binary)
    assert binary[4 : 4 + length].decode().endswith(":3:label_3")


def test_official_client_codec_round_trip(client: FlaskClient) -> None:
    """The tritonclient request encoder and response decoder agree with the server."""
    import tritonclient.http as httpclient  # noqa: PLC0415

    images = _pixels(10, 240)
    tensor = httpclient.InferInput("image", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=True)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=True)]
    body, length = httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, request_id="r1"
    )
    response = client.post(
        INFER, data=body, headers={"Inference-Header-Content-Length": str(length)}
    )
    assert response.status_code == 200
    result = httpclient.InferenceServerClient.parse_response_body(
        response.get_data(), header_length=int(response.headers["Inference-Header-Content-Length"])
    )
    assert result.get_response()["id"] == "r1"
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected_scores(images))


# Bad requests and model-server failures, all in the protocol's error shape.


@pytest.mark.parametrize(
    ("request_body", "status", "fragment"),
    [
        (
            {
                "inputs": [
                    {"name": "image", "datatype": "UINT8", "shape": [1, 8, 8, 3], "data": [0] * 192}
                ]
            },
            400,
            f"UINT8 [N, {HEIGHT}, {WIDTH}, 3]",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "FP32",
                        "shape": [1, HEIGHT, WIDTH, 3],
                        "data": [0.5] * (HEIGHT * WIDTH * 3),
                    }
                ]
            },
            400,
            "got FP32",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "UINT8",
                        "shape": [0, HEIGHT, WIDTH, 3],
                        "data": [],
                    }
                ]
            },
            400,
            "N >= 1",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "UINT8",
                        "shape": [1, HEIGHT, WIDTH, 3],
                        "data": [1, 2, 3],
                    }
                ]
            },
            400,
            "needs 1152",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "UINT8",
                        "shape": [1, HEIGHT, WIDTH, 3],
                        "data": [300] * 1152,
                    }
                ]
            },
            400,
            "between 0 and 255",
        ),
        (
            {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1], "data": [1]}]},
            400,
            "got 'pixels'",
        ),
        (
            {"inputs": [_image_input(_pixels(1)), _image_input(_pixels(2))]},
            400,
            "exactly one input",
        ),
        # Over the model server's own batch limit (4, read from it): 413 naming the limit.
        ({"inputs": [_image_input(_pixels(1, 2, 3, 4, 5))]}, 413, "at most 4 per request"),
        (
            {"inputs": [{"name": "image_bytes", "datatype": "UINT8", "shape": [1], "data": [1]}]},
            400,
            "must be BYTES [N]",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image_bytes",
                        "datatype": "BYTES",
                        "shape": [1, 2],
                        "data": [["a", "b"]],
                    }
                ]
            },
            400,
            "must be BYTES [N]",
        ),
        (
            {"inputs": [_image_input(_pixels(1))], "outputs": [{"name": "logits"}]},
            400,
            "asks for ['logits']",
        ),
        (
            {
                "inputs": [_image_input(_pixels(1))],
                "outputs": [{"name": "probabilities"}, {"name": "probabilities"}],
            },
            400,
            "one output",
        ),
        ({"inputs": "image"}, 400, "'inputs'"),
    ],
)
def test_bad_infer_requests(
    client: FlaskClient,
    predictor: FakePredictor,
    request_body: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    _assert_protocol_error(client.post(INFER, json=request_body), status, fragment)
    assert predictor.seen == []  # refused before the model was called


def test_bad_encoded_images_keep_their_status(client: FlaskClient) -> None:
    truncated = _jpeg(10)[:40]
    bomb = _jpeg(10, size=(1100, 1000))
    for files, status, fragment in [
        ([_jpeg(10), truncated], 400, "image_bytes[1]"),
        ([bomb], 413, "pixels"),
        ([b""], 400, "empty"),
    ]:
        data = _bytes_tensor(*files)
        header = {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [len(files)],
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
        _assert_protocol_error(_post_binary(client, header, data), status, fragment)


def test_malformed_bodies(client: FlaskClient) -> None:
    _assert_protocol_error(client.post(INFER, data=b"{not json"), 400, "not valid JSON")
    response = client.post(INFER, data=b"{}", headers={"Inference-Header-Content-Length": "99"})
    _assert_protocol_error(response, 400, "Inference-Header-Content-Length")
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": [1, HEIGHT, WIDTH, 3],
                "parameters": {"binary_data_size": 1152},
            }
        ]
    }
    _assert_protocol_error(_post_binary(client, header, b"\x00" * 100), 400, "only 100 remain")
    response = client.post(INFER, data=b"x", headers={"Content-Encoding": "gzip"})
    _assert_protocol_error(response, 415, "Content-Encoding")


def test_body_over_the_upload_limit_is_413(client: FlaskClient) -> None:
    response = client.post(INFER, data=b"x" * 300_000)
    _assert_protocol_error(response, 413)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ModelUnavailableError("the model server is restarting"), 503),
        (OverloadedError(), 503),
        (InferenceTimeoutError(), 504),
    ],
)
def test_model_server_failures(
    client: FlaskClient, predictor: FakePredictor, error: Exception, status: int
) -> None:
    predictor.error = error
    for response in (
        client.post(INFER, json={"inputs": [_image_input(_pixels(1))]}),
        client.get("/v2/models/fake"),
    ):
        _assert_protocol_error(response, status)
        if status == 503:
            assert response.headers["Retry-After"] == "1"


def test_unexpected_errors_are_a_generic_500(client: FlaskClient, predictor: FakePredictor) -> None:
    predictor.error = RuntimeError("secret detail")
    response = client.post(INFER, json={"inputs": [_image_input(_pixels(1))]})
    assert _assert_protocol_error(response, 500) == "internal server error"


def test_protocol_errors_are_counted_like_our_own(client: FlaskClient) -> None:
    assert client.post(INFER, json={"inputs": "image"}).status_code == 400
    assert client.get("/v2/models/other").status_code == 404
    assert client.post("/predict", data=b"", content_type="image/png").status_code == 400
    text = client.get("/metrics").get_data(as_text=True)
    assert 'onemodel_http_errors_total{code="invalid_request"} 2.0' in text
    assert 'onemodel_http_errors_total{code="not_found"} 1.0' in text
