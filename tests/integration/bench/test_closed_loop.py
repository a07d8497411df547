"""The pool benchmark's load generator against a small local HTTP server (127.0.0.1)."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

from closed_loop import ClosedLoop


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers 200, except every third request 503; closes the connection on request 5."""

    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with _Handler.lock:
            _Handler.count += 1
            number = _Handler.count
        status = 503 if number % 3 == 0 else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        if number == 5:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.count = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/predict"
    httpd.shutdown()
    httpd.server_close()


def test_every_request_is_recorded_with_its_status_and_the_count_bound_holds(
    server: str,
) -> None:
    loop = ClosedLoop(server, b"body", "text/plain", clients=2, max_duration_s=10, max_requests=30)
    with loop:
        assert loop.wait_done(10)
    outcomes = loop.outcomes()
    assert 30 <= len(outcomes) <= 31  # a client checks the bound before each request
    statuses = {outcome.status for outcome in outcomes}
    assert statuses == {200, 503}, statuses  # also after the server closed one connection
    assert all(o.finished_s >= o.started_s for o in outcomes)
    assert [o.finished_s for o in outcomes] == sorted(o.finished_s for o in outcomes)


def test_a_refused_connection_is_an_outcome_without_status() -> None:
    with socket.socket() as sock:  # a port nothing listens on once this is closed
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    loop = ClosedLoop(
        f"http://127.0.0.1:{closed}/predict",
        b"x",
        "text/plain",
        clients=1,
        max_duration_s=5,
        max_requests=3,
        pause_after_failure_s=0.01,
    )
    with loop:
        assert loop.wait_done(5)
    outcomes = loop.outcomes()
    assert len(outcomes) == 3 and all(o.status is None and o.error for o in outcomes)


def test_load_goes_to_127_0_0_1_only() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        ClosedLoop("http://localhost:8000/", b"", "text/plain", 1, 1.0, 1)
