"""A closed-loop HTTP load that records every request: client threads on 127.0.0.1 only.

wrk reports aggregates; a fault under load needs each request's status and times (when did
the last 200 before a kill come back, how long until the next one). Each client thread holds
one keep-alive connection (``http.client``, cheaper per request than ``requests``) and posts
the same multipart body back to back. The load is bounded twice: it stops after
``max_duration_s`` and after ``max_requests``, whichever comes first.

Its threads share one interpreter (one core at most, the GIL): on a 2-core machine the
client competes with the server for CPU, so absolute rates are lower than wrk's.
"""

from __future__ import annotations

import http.client
import select
import threading
import time
import urllib.parse
from dataclasses import dataclass

# A request that takes longer than this counts as failed (status None, error "timeout").
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it (time.monotonic() seconds)."""

    started_s: float
    finished_s: float
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str | None = None  # the exception's type when there was no answer

    @property
    def latency_s(self) -> float:
        return self.finished_s - self.started_s

    @property
    def ok(self) -> bool:
        return self.status == 200


class ClosedLoop:
    """``clients`` threads, each sending one POST after another until stopped or bounded."""

    def __init__(  # noqa: PLR0917 (every argument names one bound of the load)
        self,
        url: str,
        body: bytes,
        content_type: str,
        clients: int,
        max_duration_s: float,
        max_requests: int,
        pause_after_failure_s: float = 0.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname != "127.0.0.1":
            raise ValueError(f"load goes to 127.0.0.1 only, not {parts.hostname!r}")
        self._port = parts.port or 80
        self._path = parts.path or "/"
        self._body = body
        self._headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        self._clients = clients
        self._max_duration_s = max_duration_s
        self._max_requests = max_requests
        self._pause_after_failure_s = pause_after_failure_s
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0

    def __enter__(self) -> ClosedLoop:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the client threads."""
        self._deadline = time.monotonic() + self._max_duration_s
        self._threads = [
            threading.Thread(target=self._client, name=f"client-{index}", daemon=True)
            for index in range(self._clients)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[Outcome]:
        """Stop the clients (each finishes its request in flight); return every outcome."""
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)
        return self.outcomes()

    def outcomes(self) -> list[Outcome]:
        """Return the outcomes so far, in order of completion."""
        with self._lock:
            return list(self._outcomes)

    def count(self) -> int:
        """Return how many requests have completed so far."""
        with self._lock:
            return len(self._outcomes)

    def wait_done(self, timeout_s: float) -> bool:
        """Wait until every client stopped (a bound was reached); return whether they did."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.running()

    def running(self) -> bool:
        """Return whether any client is still sending."""
        return any(thread.is_alive() for thread in self._threads)

    def _client(self) -> None:
        connection: http.client.HTTPConnection | None = None
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                with self._lock:
                    if len(self._outcomes) >= self._max_requests:
                        return
                if connection is None or _closed_by_server(connection):
                    if connection is not None:
                        connection.close()
                    connection = http.client.HTTPConnection(
                        "127.0.0.1", self._port, timeout=REQUEST_TIMEOUT_S
                    )
                outcome = self._send(connection)
                if outcome.status is None:
                    connection.close()
                    connection = None
                with self._lock:
                    self._outcomes.append(outcome)
                if not outcome.ok and self._pause_after_failure_s:
                    self._stop.wait(self._pause_after_failure_s)
        finally:
            if connection is not None:
                connection.close()

    def _send(self, connection: http.client.HTTPConnection) -> Outcome:
        started = time.monotonic()
        try:
            connection.request("POST", self._path, body=self._body, headers=self._headers)
            response = connection.getresponse()
            response.read()
        except TimeoutError:
            return Outcome(started, time.monotonic(), None, error="timeout")
        except (OSError, http.client.HTTPException) as error:
            return Outcome(started, time.monotonic(), None, error=type(error).__name__)
        finished = time.monotonic()
        if response.will_close:
            connection.close()
        return Outcome(started, finished, response.status)


def _closed_by_server(connection: http.client.HTTPConnection) -> bool:
    """Return whether an idle keep-alive connection was closed (or reset) by the server."""
    sock = connection.sock
    if sock is None:
        return False  # not connected yet (or closed by us): request() connects
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)  # an idle connection is readable only at EOF or on an error
