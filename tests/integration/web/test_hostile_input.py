"""Hostile and unusual uploads through the Flask app (real imaging code, fake model).

Bad input gets its documented 4xx and never reaches the model; unusual but valid images
reach the model as exactly the pixels a plain PNG of the same picture gives.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from flask.testing import FlaskClient

from onemodel.boundary.contract import ModelInfo
from onemodel.settings import Settings
from onemodel.web.app import create_app
from tests.support.fakes import FakePredictor
from tests.support.images import (
    MULTIPART,
    UNUSUAL_NAMES,
    hostile_corpus,
    multipart,
    strip_image,
    unusual_images,
)

INPUT_HEIGHT, INPUT_WIDTH = 64, 64  # the tiny model's: small JPEGs are decoded at full scale


class SquarePredictor(FakePredictor):
    """FakePredictor with the tiny e2e model's 64x64 input."""

    def spec(self) -> ModelInfo:
        return replace(super().spec(), input_size=(INPUT_HEIGHT, INPUT_WIDTH))


@pytest.fixture
def predictor() -> FakePredictor:
    return SquarePredictor()


@pytest.fixture
def client(predictor: FakePredictor) -> FlaskClient:
    return create_app(Settings(), predictor=predictor).test_client()


def _hostile_names() -> list[object]:
    names = [case.name for case in hostile_corpus(b"\xff\xd8\xff" + bytes(1000))]
    # Werkzeug leaves the part it was spooling unclosed when the body ends mid-file (the
    # garbage collector closes it): a ResourceWarning outside our code.
    leaky = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    return [
        pytest.param(name, marks=leaky) if name == "multipart cut short" else name for name in names
    ]


@pytest.mark.parametrize("name", _hostile_names())
def test_hostile_upload_gets_its_documented_answer(
    client: FlaskClient, predictor: FakePredictor, photo_jpeg: bytes, name: str
) -> None:
    (case,) = [case for case in hostile_corpus(photo_jpeg) if case.name == name]
    response = client.post(case.path, data=case.body, content_type=case.content_type)
    assert response.status_code == case.status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == case.code
    assert body["error"]["message"]
    assert predictor.seen == []  # nothing reached the model


def test_non_utf8_file_name_is_refused_with_a_reason(
    client: FlaskClient, photo_jpeg: bytes
) -> None:
    body = multipart([(b"file", b"caf\xe9.jpg", photo_jpeg)])
    message = client.post("/predict", data=body, content_type=MULTIPART).get_json()["error"][
        "message"
    ]
    assert "UTF-8" in message


@pytest.mark.parametrize("name", UNUSUAL_NAMES)
def test_unusual_image_reaches_the_model_as_its_plain_pixels(
    client: FlaskClient, predictor: FakePredictor, photo_rgb: np.ndarray, name: str
) -> None:
    (case,) = [case for case in unusual_images(photo_rgb) if case.name == name]
    unusual = client.post(
        "/predict", data=multipart([(b"file", case.filename, case.data)]), content_type=MULTIPART
    )
    plain = client.post("/predict", data=case.reference_png, content_type="image/png")
    assert (unusual.status_code, plain.status_code) == (200, 200), unusual.get_data(as_text=True)
    sent, reference = predictor.seen
    assert sent.shape == reference.shape == (1, INPUT_HEIGHT, INPUT_WIDTH, 3)
    difference = np.abs(sent.astype(int) - reference.astype(int)).max()
    assert difference <= (0 if case.exact else 2)
    if case.exact:
        assert unusual.get_json() == plain.get_json()


def test_unusual_names_cover_the_corpus(photo_rgb: np.ndarray) -> None:
    assert sorted(UNUSUAL_NAMES) == sorted(case.name for case in unusual_images(photo_rgb))


def test_exif_orientation_changes_what_the_model_sees(
    client: FlaskClient, predictor: FakePredictor, photo_rgb: np.ndarray
) -> None:
    (case,) = [case for case in unusual_images(photo_rgb) if case.name == "EXIF-rotated JPEG"]
    stored = cv2.imdecode(
        np.frombuffer(case.data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    )
    ok, unrotated = cv2.imencode(".png", stored)
    assert ok
    client.post("/predict", data=case.data, content_type="image/jpeg")
    client.post("/predict", data=unrotated.tobytes(), content_type="image/png")
    rotated_input, unrotated_input = predictor.seen
    # Otherwise the equality above would prove nothing about orientation.
    assert not np.array_equal(rotated_input, unrotated_input)


def test_an_extreme_strip_is_squashed_to_the_input_size(
    client: FlaskClient, predictor: FakePredictor, photo_rgb: np.ndarray
) -> None:
    strip = strip_image(photo_rgb)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    assert ok
    response = client.post("/predict", data=encoded.tobytes(), content_type="image/png")
    assert response.status_code == 200
    (sent,) = predictor.seen
    expected = cv2.resize(strip, (INPUT_WIDTH, INPUT_HEIGHT), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(sent[0], expected)


def test_too_many_parts_is_refused_before_the_file_is_read(
    client: FlaskClient, predictor: FakePredictor, photo_jpeg: bytes
) -> None:
    parts = [(f"field{index}".encode(), None, b"x") for index in range(40)]
    response = client.post(
        "/predict",
        data=multipart([*parts, (b"file", b"a.jpg", photo_jpeg)]),
        content_type=MULTIPART,
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert predictor.seen == []
