"""The version watcher with a fake loader: choice, swaps, failures, fall-back, pinning."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from onemodel.boundary.contract import ModelInfo
from onemodel.errors import ModelLoadError, ModelUnavailableError
from onemodel.model_server import versions
from onemodel.model_server.batcher import Batcher
from onemodel.model_server.metrics import ServerMetrics
from onemodel.model_server.repository import ModelVersion, open_repository
from onemodel.model_server.service import ModelService
from onemodel.model_server.versions import VersionWatcher
from onemodel.settings import Settings
from tests.support.processes import wait_until


class FakeLoader:
    """Loads a "model file" holding its class count, or raising if it says 'broken'."""

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.batchers: list[Batcher] = []

    def __call__(self, version: ModelVersion) -> tuple[Batcher, ModelInfo]:
        self.loaded.append(version.version)
        text = Path(version.model_path).read_text()
        if text == "broken":
            raise ModelLoadError(f"MODEL_PATH={version.model_path!r} could not be loaded")
        if text == "crash":
            raise RuntimeError("keras fell over")
        classes = int(text)
        batcher = Batcher(
            lambda images: np.ones((images.shape[0], classes), np.float32),
            max_batch_size=4,
            max_delay_ms=0,
            max_queue=8,
        )
        batcher.start()
        self.batchers.append(batcher)
        labels = tuple(f"c{index}" for index in range(classes))
        return batcher, ModelInfo(state="ready", input_size=(2, 2), labels=labels, max_batch_size=4)


@pytest.fixture
def loader() -> Iterator[FakeLoader]:
    loader = FakeLoader()
    yield loader
    for batcher in loader.batchers:
        batcher.stop()


def _write(root: Path, number: int, content: str) -> None:
    directory = root / str(number)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.keras").write_text(content)


def _watcher(
    root: Path, loader: FakeLoader, pinned: int | None = None
) -> tuple[VersionWatcher, ModelService, ServerMetrics]:
    metrics = ServerMetrics()
    service = ModelService(metrics=metrics)
    repository = open_repository(Settings(model_path=str(root)))
    watcher = VersionWatcher(
        service, repository, loader, pinned=pinned, poll_s=0, retire_timeout_s=5, metrics=metrics
    )
    return watcher, service, metrics


def _predict(service: ModelService) -> tuple[str, int]:
    scores = service.predict(np.zeros((1, 2, 2, 3), np.uint8), 5)
    return service.info().version, scores.shape[1]


def test_the_highest_version_that_loads_serves(tmp_path: Path, loader: FakeLoader) -> None:
    root = tmp_path / "flowers"
    _write(root, 1, "2")
    _write(root, 2, "3")
    _write(root, 3, "broken")
    watcher, service, _ = _watcher(root, loader)
    assert watcher.load_initial()
    assert loader.loaded == ["3", "2"]
    info = service.info()
    assert (info.name, info.version, info.versions) == ("flowers", "2", ("1", "2", "3"))
    assert info.last_error.startswith("version 3: MODEL_PATH=")
    assert _predict(service) == ("2", 3)


def test_a_new_version_is_swapped_in_and_the_old_one_released(
    tmp_path: Path, loader: FakeLoader
) -> None:
    root = tmp_path / "m"
    _write(root, 1, "2")
    watcher, service, metrics = _watcher(root, loader)
    assert watcher.load_initial()
    old = watcher.batcher
    assert old is not None
    assert watcher.refresh() is False  # nothing new
    _write(root, 2, "5")
    assert watcher.refresh() is True
    assert _predict(service) == ("2", 5)
    with pytest.raises(ModelUnavailableError):
        old.submit(np.zeros((1, 2, 2, 3), np.uint8), 1)  # stopped
    assert service.info().load_count == 2 and metrics.model_swaps._value.get() == 1


def test_a_broken_new_version_is_skipped_until_its_files_change(
    tmp_path: Path, loader: FakeLoader
) -> None:
    root = tmp_path / "m"
    _write(root, 1, "2")
    watcher, service, metrics = _watcher(root, loader)
    assert watcher.load_initial()
    _write(root, 2, "crash")
    assert watcher.refresh() is False
    assert watcher.refresh() is False
    assert loader.loaded == ["1", "2"]  # tried once, not on every poll
    info = service.info()
    assert info.ready and info.version == "1"
    assert info.last_error == "version 2: RuntimeError: keras fell over"
    assert _predict(service) == ("1", 2)
    assert metrics.version_failures._value.get() == 1
    _write(root, 2, "4")  # fixed in place: new size and time
    os.utime(root / "2" / "model.keras", ns=(1, 1))
    assert watcher.refresh() is True
    assert _predict(service) == ("2", 4)
    assert service.info().last_error == ""


def test_an_incomplete_version_directory_is_reported_not_loaded(
    tmp_path: Path, loader: FakeLoader
) -> None:
    root = tmp_path / "m"
    _write(root, 1, "2")
    watcher, service, _ = _watcher(root, loader)
    assert watcher.load_initial()
    (root / "2").mkdir()
    assert watcher.refresh() is False
    assert "version 2: " in service.info().last_error
    assert "no .keras or .h5 model file" in service.info().last_error
    assert loader.loaded == ["1"]


def test_removing_the_served_version_falls_back(tmp_path: Path, loader: FakeLoader) -> None:
    root = tmp_path / "m"
    _write(root, 1, "2")
    _write(root, 2, "3")
    watcher, service, _ = _watcher(root, loader)
    assert watcher.load_initial() and _predict(service) == ("2", 3)
    (root / "2" / "model.keras").unlink()
    (root / "2").rmdir()
    assert watcher.refresh() is True
    assert _predict(service) == ("1", 2)
    assert service.info().versions == ("1",)


def test_a_removed_last_version_keeps_serving_from_memory(
    tmp_path: Path, loader: FakeLoader
) -> None:
    root = tmp_path / "m"
    _write(root, 1, "2")
    watcher, service, _ = _watcher(root, loader)
    assert watcher.load_initial()
    (root / "1" / "model.keras").unlink()
    assert watcher.refresh() is False
    assert _predict(service) == ("1", 2)


def test_a_pinned_version_ignores_newer_ones(tmp_path: Path, loader: FakeLoader) -> None:
    root = tmp_path / "m"
    _write(root, 1, "2")
    _write(root, 2, "3")
    watcher, service, _ = _watcher(root, loader, pinned=1)
    assert watcher.load_initial() and _predict(service) == ("1", 2)
    _write(root, 3, "4")
    assert watcher.refresh() is False
    assert loader.loaded == ["1"]


def test_no_loadable_version_fails_the_service_with_the_reasons(
    tmp_path: Path, loader: FakeLoader
) -> None:
    root = tmp_path / "m"
    _write(root, 1, "broken")
    watcher, service, _ = _watcher(root, loader)
    assert watcher.load_initial() is False
    info = service.info()
    assert info.state == "failed" and "version 1: MODEL_PATH=" in info.reason


def test_wake_makes_the_thread_look_now(tmp_path: Path, loader: FakeLoader) -> None:
    root = tmp_path / "m"
    _write(root, 1, "2")
    watcher, service, _ = _watcher(root, loader)  # poll_s=0: only woken
    assert watcher.load_initial()
    watcher.start()
    try:
        _write(root, 2, "6")
        watcher.wake()
        wait_until(lambda: service.info().version == "2", 10, "version 2 after wake()")
    finally:
        watcher.stop()
    assert _predict(service) == ("2", 6)


def test_the_old_model_is_garbage_when_memory_is_given_back(
    tmp_path: Path, loader: FakeLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "m"
    _write(root, 1, "2")
    watcher, _, _ = _watcher(root, loader)
    assert watcher.load_initial()
    old = weakref.ref(loader.batchers.pop())  # the loader keeps no reference either
    collected_at_release: list[bool] = []
    monkeypatch.setattr(
        versions, "release_free_memory", lambda: collected_at_release.append(old() is None)
    )
    _write(root, 2, "3")
    assert watcher.refresh() is True
    # Otherwise the process keeps the old model's memory (measured with VGG16: +490 MB).
    assert collected_at_release == [True]


def test_a_single_model_file_fails_with_its_own_message(tmp_path: Path, loader: FakeLoader) -> None:
    model = tmp_path / "tiny.keras"
    model.write_text("broken")
    service = ModelService()
    repository = open_repository(Settings(model_path=str(model)))
    watcher = VersionWatcher(service, repository, loader)
    assert watcher.load_initial() is False
    assert service.info().reason == f"MODEL_PATH={str(model)!r} could not be loaded"
    watcher.start()  # nothing to watch: no thread
    assert watcher._thread is None
