"""A bounded HTTP load for fault, overload and soak tests: client threads on 127.0.0.1 only.

Every load is bounded twice: it stops after ``max_duration_s`` and after ``max_requests``,
whichever comes first, even if the test that started it forgets to stop it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import requests

Send = Callable[[requests.Session], requests.Response]


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it (monotonic seconds)."""

    started_s: float
    finished_s: float
    status: int | None  # None: no HTTP answer at all (connection refused, reset, timeout)
    code: str | None = None  # the JSON error code of an error answer
    retry_after: str | None = None
    request_id: str | None = None
    error: str | None = None  # the exception's type when there was no answer

    @property
    def latency_s(self) -> float:
        return self.finished_s - self.started_s


def send_once(send: Send, session: requests.Session) -> Outcome:
    """Send one request and describe what came back."""
    started = time.monotonic()
    try:
        response = send(session)
    except requests.RequestException as error:
        return Outcome(started, time.monotonic(), None, error=type(error).__name__)
    finished = time.monotonic()
    code = None
    if response.status_code >= 400:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "<not the JSON error shape>"
    return Outcome(
        started,
        finished,
        response.status_code,
        code=code,
        retry_after=response.headers.get("Retry-After"),
        request_id=response.headers.get("X-Request-ID"),
    )


class Load:
    """Client threads that each send one request after another until stopped or bounded."""

    def __init__(
        self,
        send: Send,
        *,
        clients: int,
        max_duration_s: float,
        max_requests: int,
        fresh_connections: bool = False,
        pause_after_failure_s: float = 0.0,
    ) -> None:
        self._send = send
        self._clients = clients
        self._max_duration_s = max_duration_s
        self._max_requests = max_requests
        self._fresh_connections = fresh_connections
        self._pause_after_failure_s = pause_after_failure_s
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the client threads."""
        self._deadline = time.monotonic() + self._max_duration_s
        self._threads = [
            threading.Thread(target=self._client, name=f"load-{index}", daemon=True)
            for index in range(self._clients)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[Outcome]:
        """Stop the clients (each finishes its request in flight); return every outcome."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return self.outcomes()

    def outcomes(self) -> list[Outcome]:
        """Return the outcomes so far, in order of completion."""
        with self._lock:
            return list(self._outcomes)

    def wait_for(self, check: Callable[[list[Outcome]], bool], timeout_s: float) -> bool:
        """Wait until check(outcomes) holds, the load ends or timeout_s passes; return check."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check(self.outcomes()):
                return True
            if not any(thread.is_alive() for thread in self._threads):
                break
            time.sleep(0.02)
        return check(self.outcomes())

    def _client(self) -> None:
        session = requests.Session()
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                with self._lock:
                    if len(self._outcomes) >= self._max_requests:
                        return
                if self._fresh_connections:
                    session.close()
                    session = requests.Session()
                outcome = send_once(self._send, session)
                with self._lock:
                    self._outcomes.append(outcome)
                if outcome.status != 200 and self._pause_after_failure_s:
                    self._stop.wait(self._pause_after_failure_s)
        finally:
            session.close()


def percentile(values: Iterable[float], fraction: float) -> float:
    """Return the nearest-rank percentile (fraction in 0..1) of values; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
