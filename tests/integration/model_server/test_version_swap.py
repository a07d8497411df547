"""A version swap under load with a real model server process and real Keras models.

Four clients post photos through the web app (in-process, real ModelClient) while a new
version appears in the repository, and then a broken one.
"""

from __future__ import annotations

import io
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from onemodel.boundary.client import ModelClient
from onemodel.boundary.contract import ModelInfo
from onemodel.settings import Address, Settings
from onemodel.web.app import create_app
from tests.conftest import build_model
from tests.support.processes import (
    Service,
    base_env,
    new_authkey,
    start_model_server,
    wait_until,
)

pytestmark = pytest.mark.slow

POLL_S = 1.0
CLIENTS = 4
V2_SIZE, V2_CLASSES = 48, 5
LOAD_LIMIT_S = 300.0  # the load loop's hard bound
LOAD_LIMIT_REQUESTS = 20_000


@dataclass
class Answer:
    client: int
    at: float
    status: int
    version: str
    labels: list[str]


@dataclass
class Load:
    """CLIENTS threads posting a photo to /predict until stopped (bounded in time and count)."""

    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def run(self, client: int, app: object, photo: bytes) -> None:
        web = app.test_client()  # type: ignore[attr-defined]
        deadline = time.monotonic() + LOAD_LIMIT_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            if len(self.answers) >= LOAD_LIMIT_REQUESTS:
                break
            response = web.post("/predict", data={"file": (io.BytesIO(photo), "photo.jpg")})
            body = response.get_json(silent=True) or {}
            labels = [item["label"] for item in body.get("predictions", [])]
            version = str(body.get("model_version", ""))
            self.answers.append(
                Answer(client, time.monotonic(), response.status_code, version, labels)
            )

    def count(self, version: str | None = None) -> int:
        return sum(1 for answer in self.answers if version is None or answer.version == version)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Version 1: 64x64, 10 classes. Version 2: 48x48, 5 classes (so answers differ)."""
    folder = tmp_path_factory.mktemp("version_models")
    one = build_model(folder / "one.keras")
    two = build_model(folder / "two.keras", size=V2_SIZE, classes=V2_CLASSES, seed=8)
    return one, two


@pytest.fixture
def server(
    tmp_path: Path, models: tuple[Path, Path]
) -> Iterator[tuple[Service, ModelClient, Path]]:
    root = tmp_path / "tiny"
    (root / "1").mkdir(parents=True)
    shutil.copy(models[0], root / "1" / "model.keras")
    address = Address(path=str(tmp_path / "model.sock"))
    authkey = new_authkey()
    env = base_env(
        MODEL_PATH=str(root),
        MODEL_POLL_S=str(POLL_S),
        MODEL_SERVER_ADDRESS=str(address),
        MODEL_SERVER_AUTHKEY=authkey,
        MAX_BATCH_DELAY_MS="2",
    )
    service = start_model_server(env, tmp_path / "model_server.log")
    client = ModelClient(address, authkey.encode())

    def ready() -> ModelInfo | None:
        if service.process.poll() is not None:
            raise AssertionError(f"the model server exited:\n{service.log()[-3000:]}")
        info = client.info()
        return info if info.ready else None

    wait_until(ready, 300, "the model server to serve version 1", interval_s=0.5)
    yield service, client, root
    service.stop()


def _publish(root: Path, number: int, model: Path | None, labels: list[str] | None) -> float:
    """Copy a version in under a temporary name and rename it into place; return when."""
    staging = root / f".tmp-{number}"
    staging.mkdir()
    if model is None:
        (staging / "model.keras").write_bytes(b"this is not a Keras file")
    else:
        shutil.copy(model, staging / "model.keras")
    if labels is not None:
        (staging / "labels.txt").write_text("\n".join(labels) + "\n")
    staging.rename(root / str(number))
    return time.monotonic()


def _rss_mb(pid: int, samples: int = 5) -> float:
    process = psutil.Process(pid)
    values = []
    for _ in range(samples):
        values.append(process.memory_info().rss / 2**20)
        time.sleep(0.2)  # spaced samples of a live process, not a wait for a condition
    return sorted(values)[samples // 2]


def _log_time(log: str, pattern: str) -> datetime:
    match = re.search(rf"^(\S+ \S+) \[\d+\] \w+ \S+: {pattern}", log, re.MULTILINE)
    assert match, f"no log line {pattern!r} in:\n{log[-3000:]}"
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")


def test_a_new_version_takes_over_under_load_and_a_broken_one_is_skipped(
    server: tuple[Service, ModelClient, Path], models: tuple[Path, Path], photo_jpeg: bytes
) -> None:
    service, client, root = server
    settings = Settings(model_server_address=Address(path="/unused"), request_timeout_s=30)
    app = create_app(settings, client)
    load = Load()
    for index in range(CLIENTS):
        thread = threading.Thread(target=load.run, args=(index, app, photo_jpeg), daemon=True)
        load.threads.append(thread)
        thread.start()
    try:
        wait_until(lambda: load.count("1") >= 40, 120, "40 answers from version 1")
        rss_before = _rss_mb(service.pid)

        v2_labels = [f"v2_class_{index}" for index in range(V2_CLASSES)]
        published = _publish(root, 2, models[1], v2_labels)
        first_v2 = wait_until(
            lambda: next((a.at for a in load.answers if a.version == "2"), None),
            POLL_S + 120,
            "an answer from version 2",
        )
        wait_until(lambda: "released version 1" in service.log(), 60, "version 1 released")
        answered_at_release = load.count()
        wait_until(lambda: load.count("2") >= 80, 120, "80 answers from version 2")
        rss_after = _rss_mb(service.pid)

        _publish(root, 3, None, None)
        broken = wait_until(
            lambda: (info := client.info()).last_error and info, 30, "version 3's failure"
        )
        answered_before_broken = load.count()
        wait_until(lambda: load.count() >= answered_before_broken + 40, 60, "40 more answers")
    finally:
        load.stop.set()
        for thread in load.threads:
            thread.join(60)

    log = service.log()
    load_s = (
        _log_time(log, "model tiny version 2 serves") - _log_time(log, "loading tiny version 2")
    ).total_seconds()
    statuses: dict[int, int] = {}
    for answer in load.answers:
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
    print(
        f"\nversion swap under {CLIENTS} clients: {len(load.answers)} requests, statuses "
        f"{statuses}; version 1: {load.count('1')}, version 2: {load.count('2')}; "
        f"new version served {first_v2 - published:.2f} s after it appeared "
        f"(MODEL_POLL_S {POLL_S:g} + load and warm-up {load_s:.2f} s); "
        f"model-server RSS {rss_before:.1f} MB before, {rss_after:.1f} MB after "
        f"({100 * (rss_after / rss_before - 1):+.1f} %); {answered_at_release} answered when "
        "version 1 was released"
    )
    assert statuses == {200: len(load.answers)}
    assert load.count("1") >= 40 and load.count("2") >= 80
    assert load.count("1") + load.count("2") == len(load.answers)
    for answer in load.answers:  # every answer labelled by the version that computed it
        prefix = "v2_class_" if answer.version == "2" else "class_"
        assert all(label.startswith(prefix) for label in answer.labels), answer
    for index in range(CLIENTS):  # a client never goes back to the old version
        versions = [answer.version for answer in load.answers if answer.client == index]
        assert "1" not in versions[versions.index("2") :] if "2" in versions else True
    assert first_v2 - published <= POLL_S + load_s + 2.0
    assert rss_after <= rss_before * 1.10
    assert broken.ready and broken.version == "2" and broken.versions == ("1", "2", "3")
    assert broken.last_error.startswith("version 3: ")
    assert client.info().version == "2"
    assert "tiny version 3 is skipped" in log
