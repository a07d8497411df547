"""Property-based tests: whatever bytes arrive, the answer is a 200 or a documented JSON 4xx.

Random bytes and random mutations (bit flips, truncation, insertion, overwrites) of valid
JPEG, PNG, GIF, WebP, BMP and TIFF files go through the real imaging code and the Flask app
(a fake model). Never a 500, never an exception escaping.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onemodel.errors import OneModelError
from onemodel.settings import Settings
from onemodel.web.app import create_app
from onemodel.web.imaging import prepare_image
from tests.support.fakes import FakePredictor
from tests.support.images import BOUNDARY, MULTIPART, multipart
from tests.support.upload_strategies import SEEDS, UPLOAD_ERRORS, uploads

FAST = settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    settings = Settings(max_upload_bytes=100_000, max_image_pixels=1_000_000, max_form_parts=8)
    return create_app(settings, predictor=FakePredictor()).test_client()


def _assert_documented(response: Any) -> None:
    body = response.get_json()
    assert body is not None, response.get_data()[:200]
    if response.status_code == 200:
        assert len(body["predictions"]) == 5
        return
    assert response.status_code in UPLOAD_ERRORS, (response.status_code, body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] in UPLOAD_ERRORS[response.status_code], body


def test_every_seed_is_a_valid_image(client: FlaskClient) -> None:
    for name, data in SEEDS.items():
        response = client.post("/predict", data=data, content_type="image/jpeg")
        assert response.status_code == 200, name


@FAST
@given(uploads)
def test_imaging_raises_only_documented_errors(data: bytes) -> None:
    try:
        image = prepare_image(data, (16, 24), max_pixels=1_000_000)
    except OneModelError as error:
        assert error.status in UPLOAD_ERRORS and error.code in UPLOAD_ERRORS[error.status]
    else:
        assert image.dtype == np.uint8 and image.shape == (16, 24, 3)


@FAST
@given(uploads)
def test_raw_upload_is_answered_200_or_a_json_4xx(client: FlaskClient, data: bytes) -> None:
    _assert_documented(client.post("/predict", data=data, content_type="image/jpeg"))


@FAST
@given(uploads)
def test_multipart_upload_is_answered_200_or_a_json_4xx(client: FlaskClient, data: bytes) -> None:
    body = multipart([(b"file", b"upload.bin", data)])
    _assert_documented(client.post("/predict", data=body, content_type=MULTIPART))


names = st.binary(max_size=24).filter(lambda name: not {34, 10, 13} & set(name))  # no " CR LF


# Werkzeug leaves the file parts it spooled unclosed when it gives up on a form (too many
# parts): the garbage collector closes them; a ResourceWarning outside our code.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    parts=st.lists(
        st.tuples(names, st.one_of(st.none(), names), st.binary(max_size=64)), max_size=12
    ),
    with_image=st.booleans(),
    content_type=st.one_of(
        st.just(MULTIPART),
        st.just("multipart/form-data"),
        st.text(max_size=40),
        st.sampled_from(
            [
                "image/png",
                "application/octet-stream",
                "text/html",
                f"multipart/mixed; boundary={BOUNDARY}",
            ]
        ),
    ),
)
def test_random_forms_and_content_types_never_fail_the_server(
    client: FlaskClient,
    parts: list[tuple[bytes, bytes | None, bytes]],
    with_image: bool,
    content_type: str,
) -> None:
    if with_image:
        parts = [*parts, (b"file", b"photo.png", SEEDS["png"])]
    try:
        response = client.post("/predict", data=multipart(parts), content_type=content_type)
    except ValueError:
        return  # the test client itself refuses a header it cannot send (e.g. a newline)
    _assert_documented(response)
