"""The manager boundary with a real manager server process (fake NumPy model, no TensorFlow)."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from onemodel.boundary.client import ModelClient
from onemodel.errors import (
    InferenceTimeoutError,
    InvalidRequestError,
    ModelUnavailableError,
    PayloadTooLargeError,
)
from onemodel.settings import Address, parse_address
from tests.support.processes import PYTHON, ROOT, base_env, free_port, new_authkey, wait_until

FAKE_SERVER = ROOT / "tests" / "support" / "fake_model_server.py"


class FakeServer:
    """A fake model server subprocess at an address."""

    def __init__(self, address: Address, authkey: str, log_path: Path, *args: str) -> None:
        self.address = address
        self.authkey = authkey
        self._log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [PYTHON, str(FAKE_SERVER), str(address), *args],
            env=base_env(MODEL_SERVER_AUTHKEY=authkey),
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready"

    def log_text(self) -> str:
        return self._log_path.read_text()

    def client(self, authkey: str | None = None) -> ModelClient:
        return ModelClient(self.address, (authkey or self.authkey).encode())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._log.close()


@pytest.fixture
def tcp_server(tmp_path: Path) -> Iterator[FakeServer]:
    server = FakeServer(
        parse_address(f"127.0.0.1:{free_port()}"),
        new_authkey(),
        tmp_path / "server.log",
        "--height",
        "48",
        "--width",
        "144",
    )
    yield server
    server.stop()


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[FakeServer]:
    server = FakeServer(
        Address(path=str(tmp_path / "model.sock")), new_authkey(), tmp_path / "server.log"
    )
    yield server
    server.stop()


def _images(n: int, height: int, width: int, value: int = 10) -> np.ndarray:
    return np.full((n, height, width, 3), value, np.uint8)


def test_every_client_reaches_the_same_instance(unix_server: FakeServer) -> None:
    first, second = unix_server.client(), unix_server.client()
    before = first.info()
    second.predict(_images(3, 8, 8), timeout_s=5)
    after = first.info()
    assert before.instance == second.info().instance == after.instance
    # State changed through one client is seen through the other: one object, not copies.
    assert after.images_served == before.images_served + 3


def test_other_processes_reach_the_same_instance(unix_server: FakeServer) -> None:
    script = (
        "import os, sys\n"
        "from onemodel.boundary.client import ModelClient\n"
        "from onemodel.settings import Address\n"
        f"address = Address(path={unix_server.address.path!r})\n"
        "client = ModelClient(address, os.environ['KEY'].encode())\n"
        "print(client.info().instance)\n"
    )
    seen = {
        subprocess.run(
            [PYTHON, "-c", script],
            env=base_env(KEY=unix_server.authkey),
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        for _ in range(2)
    }
    assert seen == {unix_server.client().info().instance}


def test_unix_socket_is_private(unix_server: FakeServer) -> None:
    assert unix_server.address.path is not None
    assert os.stat(unix_server.address.path).st_mode & 0o777 == 0o600


def test_predict_returns_one_row_per_image(tcp_server: FakeServer) -> None:
    scores = tcp_server.client().predict(_images(2, 48, 144), timeout_s=5)
    assert scores.shape == (2, 4)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_tcp_round_trip_of_a_20_kb_payload_has_no_nagle_stall(tcp_server: FakeServer) -> None:
    client = tcp_server.client()
    payload = _images(1, 48, 144)
    assert payload.nbytes == 20736
    client.predict(payload, timeout_s=5)
    durations = []
    for _ in range(30):
        started = time.perf_counter()
        client.predict(payload, timeout_s=5)
        durations.append(time.perf_counter() - started)
    # Without TCP_NODELAY each call stalls ~40 ms (Nagle + delayed ACK).
    assert statistics.median(durations) < 0.015, durations


def test_wrong_shape_or_dtype_is_a_clear_400(tcp_server: FakeServer) -> None:
    client = tcp_server.client()
    with pytest.raises(InvalidRequestError, match="expected uint8 images of shape"):
        client.predict(np.zeros((1, 8, 8, 3), np.uint8), timeout_s=5)
    with pytest.raises(InvalidRequestError):
        client.predict(np.zeros((1, 48, 144, 3), np.float32), timeout_s=5)
    # The connection is still good afterwards.
    assert client.predict(_images(1, 48, 144), timeout_s=5).shape == (1, 4)


def test_wrong_authkey_is_refused_and_others_keep_working(unix_server: FakeServer) -> None:
    intruder = unix_server.client(authkey="not-the-key-" + "x" * 30)
    with pytest.raises(ModelUnavailableError, match="authkey") as raised:
        intruder.info()
    assert unix_server.authkey not in raised.value.message
    assert unix_server.client().info().ready
    log = wait_until(
        lambda: unix_server.log_text() if "refused a client" in unix_server.log_text() else None,
        5,
        "the refusal in the server log",
    )
    assert unix_server.authkey not in log


def test_concurrent_threads_each_get_their_own_connection(unix_server: FakeServer) -> None:
    client = unix_server.client()
    results: dict[int, float] = {}

    def call(value: int) -> None:
        results[value] = float(client.predict(_images(1, 8, 8, value), timeout_s=10)[0, 0])

    threads = [threading.Thread(target=call, args=(value,)) for value in range(0, 160, 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    expected = {value: float(np.cos(value / 40.0)) for value in range(0, 160, 10)}
    assert set(results) == set(expected)
    for value, score in results.items():
        solo = client.predict(_images(1, 8, 8, value), timeout_s=10)[0, 0]
        assert score == pytest.approx(float(solo), rel=1e-6)


def test_client_reconnects_after_the_server_restarts(tmp_path: Path) -> None:
    address = Address(path=str(tmp_path / "model.sock"))
    key = new_authkey()
    server = FakeServer(address, key, tmp_path / "a.log")
    client = ModelClient(address, key.encode())
    first = client.info().instance
    server.process.kill()  # SIGKILL: the socket file stays behind
    server.stop()
    with pytest.raises(ModelUnavailableError):
        client.predict(_images(1, 8, 8), timeout_s=2)
    with pytest.raises(ModelUnavailableError, match="not running"):
        client.info()
    server = FakeServer(address, key, tmp_path / "b.log")
    try:
        info = wait_until(client.info, 10, "reconnect")
        assert info.instance != first
        assert client.predict(_images(1, 8, 8), timeout_s=2).shape == (1, 4)
        assert client.reconnects >= 1
    finally:
        server.stop()


def test_slow_model_gives_timeout_and_the_client_stays_usable(tmp_path: Path) -> None:
    address = Address(path=str(tmp_path / "model.sock"))
    server = FakeServer(address, new_authkey(), tmp_path / "s.log", "--delay-s", "1.0")
    try:
        client = server.client()
        started = time.monotonic()
        with pytest.raises(InferenceTimeoutError):
            client.predict(_images(1, 8, 8), timeout_s=0.3)
        assert time.monotonic() - started < 2.0
        assert client.predict(_images(1, 8, 8), timeout_s=5).shape == (1, 4)
    finally:
        server.stop()


def test_a_server_that_never_answers_the_handshake_fails_fast(tmp_path: Path) -> None:
    path = str(tmp_path / "silent.sock")
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(path)
    silent.listen(4)  # accepts into the backlog, never speaks: like a SIGSTOPped server
    try:
        client = ModelClient(Address(path=path), new_authkey().encode())
        started = time.monotonic()
        with pytest.raises(ModelUnavailableError, match="does not answer"):
            client.info()
        assert time.monotonic() - started < 10
    finally:
        silent.close()


def test_a_request_over_the_servers_batch_limit_is_refused_naming_it(
    unix_server: FakeServer,
) -> None:
    client = unix_server.client()
    limit = client.info().max_batch_size
    assert limit == 8  # what tests/support/fake_model_server.py serves with
    before = client.info().images_served
    with pytest.raises(PayloadTooLargeError, match="at most 8 per request") as raised:
        client.predict(_images(limit + 2, 8, 8), timeout_s=5)
    assert raised.value.status == 413
    # Refused before the model saw it: nothing was served, and the batch limit holds.
    assert client.info().images_served == before
    assert max(client.info().extra["model_calls"], default=0) <= limit
    assert client.predict(_images(limit, 8, 8), timeout_s=5).shape == (limit, 4)
