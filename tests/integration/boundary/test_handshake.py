"""The model server's handshake with a real manager server: one deadline for the whole
exchange, and a cap on unauthenticated connections, against clients that trickle bytes."""

from __future__ import annotations

import selectors
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from onemodel.boundary.client import ModelClient
from onemodel.boundary.transport import HANDSHAKE_DEADLINE_S, MAX_PENDING_HANDSHAKES
from onemodel.settings import parse_address
from tests.support.processes import Service, free_port, new_authkey
from tests.support.web import start_fake_model_server

TRICKLERS = 200
TRICKLE_INTERVAL_S = 2.5  # under the per-read timeout: only a whole-exchange deadline helps


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Service, str, str]]:
    address, key = f"127.0.0.1:{free_port()}", new_authkey()
    service = start_fake_model_server(address, key, tmp_path / "server.log")
    yield service, address, key
    service.stop()


class _Tricklers:
    """Connections that each announce an answer, then send one byte of it every
    TRICKLE_INTERVAL_S, never finishing: only a deadline for the whole exchange ends them."""

    def __init__(self, address: str, count: int) -> None:
        host, port = address.rsplit(":", 1)
        self.selector = selectors.DefaultSelector()
        self.opened_at: dict[socket.socket, float] = {}
        self.accepted_at: dict[socket.socket, float] = {}  # the server's challenge came
        self.cut_after_s: list[float] = []  # from the server's accept to its cut
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=5)
            # A length header announcing a 200-byte answer to the challenge: after it, the
            # server reads on for as long as the bytes keep trickling in.
            sock.sendall(struct.pack("!i", 200))
            sock.setblocking(False)
            self.opened_at[sock] = time.monotonic()
            self.selector.register(sock, selectors.EVENT_READ)

    def run_for(self, seconds: float) -> None:
        """Trickle and watch for closes for `seconds` (bounded)."""
        end = time.monotonic() + seconds
        next_byte = time.monotonic()
        while time.monotonic() < end and self.opened_at:
            if time.monotonic() >= next_byte:
                for sock in list(self.opened_at):
                    try:
                        sock.send(b"\x00")
                    except OSError:
                        self._cut(sock)
                next_byte = time.monotonic() + TRICKLE_INTERVAL_S
            for key, _ in self.selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    while sock.recv(4096):  # the server's challenge; EOF means cut
                        self.accepted_at.setdefault(sock, time.monotonic())
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                self._cut(sock)

    def _cut(self, sock: socket.socket) -> None:
        if sock in self.opened_at:
            started = self.accepted_at.pop(sock, self.opened_at[sock])
            del self.opened_at[sock]
            self.cut_after_s.append(time.monotonic() - started)
            self.selector.unregister(sock)
            sock.close()

    def close(self) -> None:
        for sock in list(self.opened_at):
            self._cut(sock)
        self.selector.close()


def test_trickling_clients_are_cut_at_the_deadline_and_a_real_client_is_served(
    server: tuple[Service, str, str],
) -> None:
    service, address, key = server
    baseline_threads = psutil.Process(service.pid).num_threads()
    threads: list[int] = []
    tricklers = _Tricklers(address, TRICKLERS)
    try:
        for _ in range(3):
            tricklers.run_for(1.0)
            threads.append(psutil.Process(service.pid).num_threads())
        started = time.monotonic()
        info = ModelClient(parse_address(address), key.encode()).info()
        served_in_s = time.monotonic() - started
        tricklers.run_for(HANDSHAKE_DEADLINE_S + 4 * TRICKLE_INTERVAL_S)
        cut_after_s = list(tricklers.cut_after_s)  # before close() cuts the rest itself
    finally:
        tricklers.close()
    assert info.ready
    assert served_in_s < 2.0
    assert max(threads) <= baseline_threads + MAX_PENDING_HANDSHAKES + 4, threads
    assert len(cut_after_s) == TRICKLERS
    assert max(cut_after_s) <= HANDSHAKE_DEADLINE_S + 1.5
    assert "handshake deadline passed" in service.log()
