"""The shared ModelService: its contract, readiness and the batch limit it enforces."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from onemodel.boundary.contract import ModelInfo
from onemodel.errors import InvalidRequestError, ModelUnavailableError, PayloadTooLargeError
from onemodel.model_server.batcher import Batcher
from onemodel.model_server.service import ModelService

LIMIT = 4


@pytest.fixture
def calls() -> list[int]:
    return []


@pytest.fixture
def service(calls: list[int]) -> Iterator[ModelService]:
    def model(images: np.ndarray) -> np.ndarray:
        calls.append(images.shape[0])
        return np.full((images.shape[0], 3), 1 / 3, np.float32)

    batcher = Batcher(model, max_batch_size=LIMIT, max_delay_ms=0, max_queue=16)
    batcher.start()
    service = ModelService()
    service.set_ready(
        batcher,
        ModelInfo(
            state="ready", name="m", input_size=(2, 2), labels=("a", "b", "c"), max_batch_size=LIMIT
        ),
    )
    yield service
    batcher.stop()


def _images(count: int) -> np.ndarray:
    return np.zeros((count, 2, 2, 3), np.uint8)


def test_info_is_the_typed_contract_with_the_servers_own_limits(service: ModelService) -> None:
    info = service.info()
    assert isinstance(info, ModelInfo)
    assert (info.ready, info.name, info.num_classes, info.max_batch_size) == (True, "m", 3, LIMIT)
    assert info.public()["model"] == "m" and "labels" not in info.public()


def test_a_request_over_the_batch_limit_gets_413_and_never_reaches_the_model(
    service: ModelService, calls: list[int]
) -> None:
    with pytest.raises(PayloadTooLargeError, match=f"at most {LIMIT} per request"):
        service.predict(_images(LIMIT + 6), timeout_s=5)
    assert calls == []
    assert service.predict(_images(LIMIT), timeout_s=5).shape == (LIMIT, 3)
    assert calls == [LIMIT]


def test_wrong_shapes_and_a_stopping_server_are_refused(service: ModelService) -> None:
    with pytest.raises(InvalidRequestError):
        service.predict(np.zeros((1, 3, 3, 3), np.uint8), timeout_s=5)
    service.set_stopping()
    assert service.info().state == "stopping"
    with pytest.raises(ModelUnavailableError, match="shutting down"):
        service.predict(_images(1), timeout_s=5)
