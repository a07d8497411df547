"""Hostile and unusual uploads over real HTTP against one real deployment (tiny model).

Each bad upload gets its documented 4xx; each unusual but valid image gets the prediction its
plain pixels get; a short hypothesis run finds no 5xx; and afterwards the same workers still
serve.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings

from tests.conftest import TINY_CLASSES, TINY_SIZE
from tests.support.images import (
    MULTIPART,
    UNUSUAL_NAMES,
    hostile_corpus,
    multipart,
    strip_image,
    unusual_images,
)
from tests.support.upload_strategies import UPLOAD_ERRORS, uploads
from tests.support.web import WebDeployment, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def deployment(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebDeployment]:
    web = start_web(
        tmp_path_factory.mktemp("hostile"), {"MODEL_PATH": str(tiny_model)}, workers=2, threads=2
    )
    yield web
    web.stop()


@pytest.fixture(scope="module")
def workers_at_start(deployment: WebDeployment) -> set[int]:
    return deployment.worker_pids()


def _post(
    deployment: WebDeployment, path: str, body: bytes, content_type: str | None
) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return requests.post(deployment.url(path), data=body, headers=headers, timeout=30)


def _scores(response: requests.Response) -> dict[int, float]:
    assert response.status_code == 200, response.text
    return {item["index"]: item["score"] for item in response.json()["predictions"]}


def test_two_workers_to_begin_with(workers_at_start: set[int]) -> None:
    assert len(workers_at_start) == 2


@pytest.mark.parametrize(
    "name", [case.name for case in hostile_corpus(b"\xff\xd8\xff" + bytes(1000))]
)
def test_hostile_upload_over_http(deployment: WebDeployment, photo_jpeg: bytes, name: str) -> None:
    (case,) = [case for case in hostile_corpus(photo_jpeg) if case.name == name]
    response = _post(deployment, case.path, case.body, case.content_type)
    assert response.status_code == case.status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == case.code
    assert response.headers["X-Request-ID"]


@pytest.mark.parametrize("name", UNUSUAL_NAMES)
def test_unusual_image_predicts_like_its_plain_pixels(
    deployment: WebDeployment, photo_rgb: np.ndarray, name: str
) -> None:
    (case,) = [case for case in unusual_images(photo_rgb) if case.name == name]
    path = f"/predict?top_k={TINY_CLASSES}"
    unusual = _scores(
        _post(deployment, path, multipart([(b"file", case.filename, case.data)]), MULTIPART)
    )
    plain = _scores(_post(deployment, path, case.reference_png, "image/png"))
    assert set(unusual) == set(plain) == set(range(TINY_CLASSES))
    for index, score in plain.items():
        assert unusual[index] == (score if case.exact else pytest.approx(score, abs=2e-3)), index


def test_exif_rotation_matters_to_the_model(
    deployment: WebDeployment, photo_rgb: np.ndarray
) -> None:
    (case,) = [case for case in unusual_images(photo_rgb) if case.name == "EXIF-rotated JPEG"]
    stored = cv2.imdecode(
        np.frombuffer(case.data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    )
    ok, unrotated = cv2.imencode(".png", stored)
    assert ok
    path = f"/predict?top_k={TINY_CLASSES}"
    # Otherwise the equality above would not show that orientation was honoured.
    assert _scores(_post(deployment, path, case.data, "image/jpeg")) != _scores(
        _post(deployment, path, unrotated.tobytes(), "image/png")
    )


def test_a_1x100000_strip_is_squashed_and_answered(
    deployment: WebDeployment, photo_rgb: np.ndarray
) -> None:
    strip = strip_image(photo_rgb)
    squashed = cv2.resize(strip, (TINY_SIZE, TINY_SIZE), interpolation=cv2.INTER_AREA)

    def png(rgb: np.ndarray) -> bytes:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        return encoded.tobytes()

    path = f"/predict?top_k={TINY_CLASSES}"
    assert _scores(_post(deployment, path, png(strip), "image/png")) == _scores(
        _post(deployment, path, png(squashed), "image/png")
    )


_random_statuses: list[int] = []  # what the hypothesis run got


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=uploads)
def test_random_uploads_over_http_never_get_a_5xx(deployment: WebDeployment, data: bytes) -> None:
    response = _post(deployment, "/predict", data, "image/jpeg")
    _random_statuses.append(response.status_code)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"]["code"] in UPLOAD_ERRORS[response.status_code]


def test_after_everything_the_same_workers_serve(
    deployment: WebDeployment, workers_at_start: set[int], photo_jpeg: bytes
) -> None:
    assert len(_random_statuses) >= 100  # the hypothesis run really ran
    response = _post(deployment, "/predict", photo_jpeg, "image/jpeg")
    assert response.status_code == 200
    assert deployment.worker_pids() == workers_at_start  # no worker died or was replaced
    assert deployment.readyz()["load_count"] == 1
    log = deployment.gunicorn.log()
    assert "Traceback" not in log and "WORKER TIMEOUT" not in log
    statuses = {line.status for line in deployment.access_lines()}
    assert not {status for status in statuses if status >= 500}, statuses
