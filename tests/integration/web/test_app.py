"""The Flask app through its test client, with a fake predictor standing in for the model server."""

from __future__ import annotations

import io
import socket
from typing import Any

import cv2
import numpy as np
import pytest
from flask.testing import FlaskClient

from onemodel.errors import InferenceTimeoutError, ModelUnavailableError, OverloadedError
from onemodel.settings import Settings
from onemodel.web.app import create_app
from tests.support.fakes import FakePredictor


@pytest.fixture
def predictor() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def client(predictor: FakePredictor) -> FlaskClient:
    settings = Settings(max_upload_bytes=200_000, max_image_pixels=1_000_000, max_form_parts=5)
    return create_app(settings, predictor=predictor).test_client()


def _jpeg(red: int, size: tuple[int, int] = (40, 60)) -> bytes:
    rgb = np.zeros((*size, 3), np.uint8)
    rgb[..., 0] = red
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100]
    )
    assert ok
    return encoded.tobytes()


def _upload(client: FlaskClient, data: bytes, path: str = "/predict", field: str = "file") -> Any:
    return client.post(
        path, data={field: (io.BytesIO(data), "photo.jpg")}, content_type="multipart/form-data"
    )


def test_predict_multipart(client: FlaskClient, predictor: FakePredictor) -> None:
    response = _upload(client, _jpeg(100))
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"] == "fake"
    assert len(body["predictions"]) == 5
    assert body["predictions"][0] == {
        "index": 4,
        "label": "label_4",
        "score": pytest.approx(body["predictions"][0]["score"]),
    }
    scores = [item["score"] for item in body["predictions"]]
    assert scores == sorted(scores, reverse=True)
    # The worker sent the model a compact uint8 array at the model's input size.
    assert predictor.seen[0].dtype == np.uint8
    assert predictor.seen[0].shape == (1, 16, 24, 3)


def test_predict_raw_body_and_top_k(client: FlaskClient) -> None:
    response = client.post("/predict?top_k=2", data=_jpeg(200), content_type="image/jpeg")
    assert response.status_code == 200
    assert [item["index"] for item in response.get_json()["predictions"]] == [8, 7]


def test_hello_answers_top_label_as_text(client: FlaskClient) -> None:
    response = _upload(client, _jpeg(50), path="/hello")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "label_2\n"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"", "content_type": "image/jpeg"}, 400, "invalid_request"),
        ({}, 400, "invalid_request"),
        ({"data": b"<html>hi</html>", "content_type": "text/html"}, 415, "unsupported_media_type"),
        (
            {"data": b"%PDF-1.4 not an image", "content_type": "image/jpeg"},
            415,
            "unsupported_media_type",
        ),
        (
            {"data": b"\xff\xd8\xff\xe0" + b"\x00" * 50, "content_type": "image/jpeg"},
            400,
            "invalid_image",
        ),
        ({"data": b"x" * 300_000, "content_type": "image/jpeg"}, 413, "payload_too_large"),
    ],
)
def test_bad_raw_uploads(
    client: FlaskClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/predict", **kwargs)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert response.get_json()["error"]["message"]


def test_wrong_field_name_names_the_expected_one(client: FlaskClient) -> None:
    response = _upload(client, _jpeg(10), field="image")
    assert response.status_code == 400
    assert "'file'" in response.get_json()["error"]["message"]
    assert "image" in response.get_json()["error"]["message"]


def test_zero_byte_file(client: FlaskClient) -> None:
    response = _upload(client, b"")
    assert response.status_code == 400
    assert "empty" in response.get_json()["error"]["message"]


def test_too_many_pixels(client: FlaskClient) -> None:
    response = client.post("/predict", data=_jpeg(10, size=(1100, 1000)), content_type="image/jpeg")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_many_pixels"


def test_too_many_form_parts(client: FlaskClient) -> None:
    fields = {f"field{i}": "x" for i in range(20)}
    fields["file"] = (io.BytesIO(_jpeg(10)), "photo.jpg")  # type: ignore[assignment]
    response = client.post("/predict", data=fields, content_type="multipart/form-data")
    assert response.status_code == 413


def test_malformed_multipart(client: FlaskClient) -> None:
    response = client.post(
        "/predict", data=b"--nope\r\ngarbage", content_type="multipart/form-data; boundary=xyz"
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("top_k", ["0", "12", "many"])
def test_bad_top_k(client: FlaskClient, top_k: str) -> None:
    response = client.post(f"/predict?top_k={top_k}", data=_jpeg(10), content_type="image/jpeg")
    assert response.status_code == 400
    assert "top_k" in response.get_json()["error"]["message"]


def test_method_not_allowed_is_json_with_allow(client: FlaskClient) -> None:
    response = client.get("/predict")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert response.get_json()["error"]["code"] == "method_not_allowed"


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (ModelUnavailableError("the model server is not running"), 503, "1"),
        (OverloadedError(), 503, "1"),
        (InferenceTimeoutError(), 504, None),
    ],
)
def test_model_server_errors(
    client: FlaskClient,
    predictor: FakePredictor,
    error: Exception,
    status: int,
    retry_after: str | None,
) -> None:
    predictor.error = error
    response = client.post("/predict", data=_jpeg(10), content_type="image/jpeg")
    assert response.status_code == status
    assert response.headers.get("Retry-After") == retry_after


def test_unexpected_error_is_a_generic_500_that_leaks_nothing(
    client: FlaskClient, predictor: FakePredictor
) -> None:
    predictor.error = RuntimeError("secret internal detail /srv/path")
    response = client.post("/predict", data=_jpeg(10), content_type="image/jpeg")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal_error", "message": "internal server error"}
    }
    assert b"secret" not in response.get_data()


def test_healthz_and_readyz(client: FlaskClient, predictor: FakePredictor) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    predictor.ready = False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"ready": False, "reason": "the model is loading"}
    predictor.ready = True
    predictor.error = ModelUnavailableError("the model server is not running")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "the model server is not running"


def test_readyz_with_grpc_needs_the_grpc_port_listening(predictor: FakePredictor) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        client = create_app(Settings(grpc_port=port), predictor=predictor).test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["reason"] == f"the gRPC server is not listening on port {port}"
        listener.listen()
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.get_json()["grpc_port"] == port


def test_request_id_is_returned_and_kept_when_sane(client: FlaskClient) -> None:
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    assert (
        client.get("/healthz", headers={"X-Request-ID": "bad id\x01"}).headers["X-Request-ID"]
        != "bad id\x01"
    )


def test_create_app_without_address_explains_how_to_run() -> None:
    from onemodel.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match=r"gunicorn -c gunicorn\.conf\.py"):
        create_app(Settings())


def test_metrics_count_requests_and_errors(client: FlaskClient, predictor: FakePredictor) -> None:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    client.post("/predict", data=_jpeg(10), content_type="image/jpeg")
    client.post("/predict", data=b"nope", content_type="image/jpeg")
    text = client.get("/metrics").get_data(as_text=True)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert (
        samples[
            (
                "onemodel_http_requests_total",
                (("method", "POST"), ("route", "/predict"), ("status", "200")),
            )
        ]
        == 1
    )
    assert (
        samples[
            (
                "onemodel_http_requests_total",
                (("method", "POST"), ("route", "/predict"), ("status", "415")),
            )
        ]
        == 1
    )
    assert samples[("onemodel_http_errors_total", (("code", "unsupported_media_type"),))] == 1
    assert samples[("onemodel_model_server_up", ())] == 1
    assert samples[("onemodel_batch_size_count", ())] == 3
    predictor.error = ModelUnavailableError()
    text = client.get("/metrics").get_data(as_text=True)
    assert "onemodel_model_server_up 0.0" in text
