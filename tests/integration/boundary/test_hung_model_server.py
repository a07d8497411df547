"""A model server that stops answering (SIGSTOP, wedged): every client call ends in bounded time."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Listener
from pathlib import Path

import numpy as np
import pytest

from onemodel.boundary.client import REPLY_GRACE_S, ModelClient
from onemodel.boundary.transport import HANDSHAKE_TIMEOUT_S
from onemodel.errors import InferenceTimeoutError, ModelUnavailableError
from onemodel.settings import Address, Settings
from onemodel.web.app import create_app
from tests.support.fakes import FakePredictor
from tests.support.processes import Service, new_authkey
from tests.support.web import start_fake_model_server

SLACK_S = 1.0


@pytest.fixture
def fake_server(tmp_path: Path) -> Iterator[tuple[Service, Address, str]]:
    key = new_authkey()
    address = Address(path=str(tmp_path / "model.sock"))
    server = start_fake_model_server(str(address), key, tmp_path / "fake.log")
    yield server, address, key
    os.kill(server.pid, signal.SIGCONT)
    server.stop()


class _Caller:
    """Runs calls on one thread of its own (a proxy keeps one connection per thread), so that
    a call that hangs fails the test instead of blocking it."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1)

    def __call__(self, call: Callable[[], object]) -> tuple[BaseException | None, float]:
        started = time.monotonic()
        future = self._pool.submit(call)
        try:
            future.result(timeout=3 * HANDSHAKE_TIMEOUT_S + 10)
        except TimeoutError:
            pytest.fail("the call hung")
        except Exception as error:  # reported to the test
            return error, time.monotonic() - started
        return None, time.monotonic() - started

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def caller() -> Iterator[_Caller]:
    caller = _Caller()
    yield caller
    caller.close()


def test_a_stopped_server_gives_a_504_then_fast_503s_and_recovers(
    fake_server: tuple[Service, Address, str], caller: _Caller
) -> None:
    server, address, key = fake_server
    images = np.zeros((1, 8, 8, 3), np.uint8)
    client = ModelClient(address, key.encode())
    instance = client.info().instance
    assert caller(lambda: client.predict(images, timeout_s=5))[0] is None  # connected
    os.kill(server.pid, signal.SIGSTOP)
    try:
        # An established connection: the server's reply never comes, the client gives up.
        error, elapsed = caller(lambda: client.predict(images, timeout_s=0.5))
        assert isinstance(error, InferenceTimeoutError)
        assert elapsed < 0.5 + REPLY_GRACE_S + SLACK_S
        # That connection was dropped; a new one cannot finish its handshake. One wait, not
        # one per attempt: a server that does not answer is not retried.
        error, elapsed = caller(lambda: client.predict(images, timeout_s=0.5))
        assert isinstance(error, ModelUnavailableError)
        assert "does not answer" in error.message
        assert elapsed < HANDSHAKE_TIMEOUT_S + SLACK_S
        # A brand-new client too.
        error, elapsed = caller(ModelClient(address, key.encode()).info)
        assert isinstance(error, ModelUnavailableError)
        assert elapsed < HANDSHAKE_TIMEOUT_S + SLACK_S
    finally:
        os.kill(server.pid, signal.SIGCONT)
    # Resumed: the same client works again on the same server object, without a reconnect.
    assert caller(lambda: client.predict(images, timeout_s=5))[0] is None
    assert client.info().instance == instance
    assert client.reconnects == 0


def test_a_server_that_goes_quiet_after_the_handshake_does_not_hang_the_client(
    tmp_path: Path, caller: _Caller
) -> None:
    key = new_authkey().encode()
    path = str(tmp_path / "quiet.sock")
    # Accepts and authenticates like a manager server, then never answers a request.
    listener = Listener(path, family="AF_UNIX", authkey=key)
    held = []

    def accept_forever() -> None:
        while True:
            try:
                held.append(listener.accept())
            except OSError:
                return

    threading.Thread(target=accept_forever, daemon=True).start()
    try:
        error, elapsed = caller(ModelClient(Address(path=path), key).info)
    finally:
        listener.close()
    assert held, "the client never completed the handshake"
    assert isinstance(error, ModelUnavailableError)
    assert "does not answer" in error.message
    assert elapsed < HANDSHAKE_TIMEOUT_S + SLACK_S


def test_readyz_says_not_ready_when_the_model_server_times_out() -> None:
    predictor = FakePredictor()
    client = create_app(Settings(), predictor=predictor).test_client()
    predictor.error = InferenceTimeoutError("the model server did not answer within 5 s")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json() == {
        "ready": False,
        "reason": "the model server did not answer within 5 s",
    }
