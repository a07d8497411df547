"""ModelService swaps: version checks, work finishing on the old batcher, retiring it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from onemodel.boundary.contract import ModelInfo
from onemodel.errors import ModelChangedError, ModelUnavailableError
from onemodel.model_server.batcher import Batcher
from onemodel.model_server.metrics import ServerMetrics
from onemodel.model_server.service import ModelService


def _batcher(classes: int, gate: threading.Event | None = None) -> tuple[Batcher, list[int]]:
    calls: list[int] = []

    def model(images: np.ndarray) -> np.ndarray:
        calls.append(images.shape[0])
        if gate is not None:
            assert gate.wait(10), "the test never opened the gate"
        return np.full((images.shape[0], classes), 1 / classes, np.float32)

    batcher = Batcher(model, max_batch_size=4, max_delay_ms=0, max_queue=16)
    batcher.start()
    return batcher, calls


def _info(version: str, classes: int) -> ModelInfo:
    return ModelInfo(
        state="ready",
        name="m",
        version=version,
        input_size=(2, 2),
        labels=tuple(f"c{index}" for index in range(classes)),
        max_batch_size=4,
    )


def _images() -> np.ndarray:
    return np.zeros((1, 2, 2, 3), np.uint8)


def _wait(condition: Callable[[], bool], what: str) -> None:
    event = threading.Event()
    for _ in range(200):
        if condition():
            return
        event.wait(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_prediction_for_a_replaced_version_is_refused() -> None:
    service = ModelService()
    one, _ = _batcher(2)
    two, _ = _batcher(3)
    assert service.set_ready(one, _info("1", 2)) is None
    assert service.predict(_images(), 5, version="1").shape == (1, 2)
    assert service.set_ready(two, _info("2", 3)) is one
    with pytest.raises(ModelChangedError, match="version 1 of 'm' is no longer served; version 2"):
        service.predict(_images(), 5, version="1")
    assert service.predict(_images(), 5, version="2").shape == (1, 3)
    assert service.predict(_images(), 5).shape == (1, 3)  # no version: whatever serves
    assert ModelChangedError().status == 503 and ModelChangedError().code == "model_changed"
    for batcher in (one, two):
        batcher.stop()


def test_work_on_the_old_batcher_finishes_on_it_then_it_is_retired() -> None:
    service = ModelService()
    gate = threading.Event()
    one, old_calls = _batcher(2, gate)
    two, new_calls = _batcher(3)
    service.set_ready(one, _info("1", 2))
    results: list[np.ndarray] = []
    running = threading.Thread(
        target=lambda: results.append(service.predict(_images(), 10, version="1"))
    )
    running.start()
    _wait(lambda: old_calls == [1], "the old model to start the request")
    service.set_ready(two, _info("2", 3))
    retired: list[bool] = []
    retiring = threading.Thread(target=lambda: retired.append(service.retire(one, 10)))
    retiring.start()
    # The new version answers at once while the old one still works on its request.
    assert service.predict(_images(), 5, version="2").shape == (1, 3)
    assert new_calls == [1] and retiring.is_alive() and not results
    gate.set()
    running.join(10)
    retiring.join(10)
    assert results[0].shape == (1, 2)  # computed by version 1, as asked
    assert retired == [True]
    with pytest.raises(ModelUnavailableError):
        one.submit(_images(), 1)  # stopped and released
    two.stop()


def test_retire_gives_up_after_its_timeout() -> None:
    service = ModelService()
    gate = threading.Event()
    one, calls = _batcher(2, gate)
    service.set_ready(one, _info("1", 2))
    running = threading.Thread(target=lambda: service.predict(_images(), 10), daemon=True)
    running.start()
    _wait(lambda: calls == [1], "the model call")
    two, _ = _batcher(3)
    service.set_ready(two, _info("2", 3))
    opener = threading.Timer(1.0, gate.set)  # after retire gave up: stop() joins the batch
    opener.start()
    assert service.retire(one, timeout_s=0.2) is False
    running.join(10)
    opener.join()
    two.stop()


def test_info_and_metrics_name_the_served_version() -> None:
    metrics = ServerMetrics()
    service = ModelService(metrics=metrics)
    one, _ = _batcher(2)
    service.set_ready(one, _info("2", 2))
    service.set_versions(("1", "2", "3"), "version 3: no .keras or .h5 model file")
    info = service.info()
    assert (info.version, info.versions) == ("2", ("1", "2", "3"))
    public = info.public()
    assert public["version"] == "2" and public["versions"] == ["1", "2", "3"]
    assert public["last_error"] == "version 3: no .keras or .h5 model file"
    text = metrics.render().decode()
    assert 'onemodel_model_version_info{version="2"} 1.0' in text
    assert 'version="1"' not in text
    one.stop()
