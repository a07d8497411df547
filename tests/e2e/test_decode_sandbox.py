"""Hostile files against real Gunicorn with the decode sandbox (tiny model, real HTTP).

For every file of issue 10's classes 1-5: a JSON 4xx within 5 s, the same workers before
and after, every concurrent normal request answered 200, and the service's peak memory
(RSS summed over the whole process tree, decoders included) at most 300 MB over idle;
four expanding files at once at most 700 MB over idle (and answered within two decode
deadlines: with one decoder per worker, two of them wait).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.hostile_images import hostile_files
from tests.support.processes import process_tree
from tests.support.web import WebDeployment, record_figures, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MB = 1_000_000
ANSWER_S = 5.0
DECODE_TIMEOUT_S = 3.0
ONE_FILE_MB = 300
FOUR_FILES_MB = 700
EXPANDING = [case for case in hostile_files() if case.attack_class == 5][:4]


@pytest.fixture(scope="module")
def deployment(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebDeployment]:
    web = start_web(
        tmp_path_factory.mktemp("sandbox"),
        {"MODEL_PATH": str(tiny_model), "DECODE_TIMEOUT_S": str(DECODE_TIMEOUT_S)},
        workers=2,
        threads=4,
    )
    yield web
    web.stop()


@pytest.fixture(scope="module")
def workers_at_start(deployment: WebDeployment, photo_jpeg: bytes) -> set[int]:
    # Start every decoder (two per worker) so idle memory includes them.
    with ThreadPoolExecutor(8) as executor:
        list(executor.map(lambda _: _post(deployment, photo_jpeg), range(32)))
    return deployment.worker_pids()


def _post(deployment: WebDeployment, data: bytes) -> requests.Response:
    return requests.post(
        deployment.url("/predict"),
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )


class _PeakMemory:
    """Sample the RSS of a process tree every few milliseconds; keep the highest sum."""

    def __init__(self, root_pid: int) -> None:
        self._root_pid = root_pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def total(self) -> int:
        total = 0
        for pid in process_tree(self._root_pid):
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.total())
            self._stop.wait(0.01)


def _with_normal_traffic(
    deployment: WebDeployment, photo_jpeg: bytes, attack: Callable[[], list[requests.Response]]
) -> tuple[list[requests.Response], list[int], float]:
    """Run attack() while 4 clients send normal uploads; return its answers, theirs, its time."""
    stop = threading.Event()
    statuses: list[int] = []

    def client() -> None:
        while not stop.is_set():
            statuses.append(_post(deployment, photo_jpeg).status_code)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        started = time.monotonic()
        answers = attack()
        took = time.monotonic() - started
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
    return answers, statuses, took


def _code(response: requests.Response) -> str:
    if response.status_code == 200:
        return "ok"
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["Content-Type"] == "application/json"
    return str(response.json()["error"]["code"])


@pytest.mark.parametrize("name", [case.name for case in hostile_files()])
def test_hostile_file_costs_only_its_own_request(
    deployment: WebDeployment, workers_at_start: set[int], photo_jpeg: bytes, name: str
) -> None:
    (case,) = [case for case in hostile_files() if case.name == name]
    memory = _PeakMemory(deployment.gunicorn.pid)
    idle = memory.total()
    with memory:
        answers, statuses, took = _with_normal_traffic(
            deployment, photo_jpeg, lambda: [_post(deployment, case.data)]
        )
    (answer,) = answers
    rise_mb = (memory.peak - idle) / MB
    record_figures(
        "decode_sandbox",
        name,
        {
            "class": case.attack_class,
            "bytes": len(case.data),
            "status": answer.status_code,
            "answer": _code(answer),
            "seconds": round(took, 2),
            "idle_mb": round(idle / MB),
            "peak_rise_mb": round(rise_mb),
            "normal_requests": len(statuses),
        },
    )
    assert _code(answer) in case.answers
    assert took < ANSWER_S
    assert statuses and set(statuses) == {200}
    assert deployment.worker_pids() == workers_at_start
    assert rise_mb <= ONE_FILE_MB


def test_four_expanding_files_at_once_stay_within_the_budget(
    deployment: WebDeployment, workers_at_start: set[int], photo_jpeg: bytes
) -> None:
    memory = _PeakMemory(deployment.gunicorn.pid)
    idle = memory.total()

    def attack() -> list[requests.Response]:
        with ThreadPoolExecutor(len(EXPANDING)) as executor:
            return list(executor.map(lambda case: _post(deployment, case.data), EXPANDING))

    with memory:
        answers, statuses, took = _with_normal_traffic(deployment, photo_jpeg, attack)
    rise_mb = (memory.peak - idle) / MB
    record_figures(
        "decode_sandbox",
        "four expanding files at once",
        {
            "answers": [_code(answer) for answer in answers],
            "seconds": round(took, 2),
            "idle_mb": round(idle / MB),
            "peak_rise_mb": round(rise_mb),
            "normal_requests": len(statuses),
        },
    )
    for case, answer in zip(EXPANDING, answers, strict=True):
        assert _code(answer) in case.answers
    # Two workers with one decoder each: two of the four wait for the first two.
    assert took < 2 * DECODE_TIMEOUT_S + 2.0
    assert statuses and set(statuses) == {200}
    assert deployment.worker_pids() == workers_at_start
    assert rise_mb <= FOUR_FILES_MB
