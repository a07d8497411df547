"""Send hostile cases over real HTTP and watch the service meanwhile (RSS, normal traffic)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil
import requests

from tests.support.hostile import MODEL_PLACEHOLDER, HostileCase

ANSWER_WITHIN_S = 5.0
_READ_TIMEOUT_S = ANSWER_WITHIN_S + 1.0  # a little over the target: late shows as late


@dataclass(frozen=True)
class Answer:
    """What the service answered to one request (or why it did not)."""

    status: int | None  # None: no HTTP answer at all
    content_type: str
    body: bytes
    elapsed_s: float
    error: str = ""  # "timeout", "connection dropped: ..." when status is None

    def json(self) -> Any:
        return json.loads(self.body)


def v2_image_request(data: bytes) -> tuple[bytes, dict[str, str]]:
    """Return a binary /v2 inference body carrying the image as one BYTES element."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 4 + len(data)},
                }
            ]
        }
    ).encode()
    body = header + struct.pack("<I", len(data)) + data
    return body, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def send(case: HostileCase, base_url: str, model: str, *, v2_image: bool = False) -> Answer:
    """Send one case (its raw bytes, its body, or its image as a /v2 input)."""
    raw = case.raw_bytes()
    if raw is not None:
        return send_raw(base_url, raw.replace(MODEL_PLACEHOLDER.encode(), model.encode(), 1))
    if v2_image:
        body, headers = v2_image_request(case.body_bytes())
        path = f"/v2/models/{model}/infer"
    else:
        body = case.body_bytes()
        headers: dict[str, str | bytes] = {
            name: _header_bytes(value) for name, value in case.headers
        }
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
        path = case.path.replace(MODEL_PLACEHOLDER, model)
    start = time.monotonic()
    try:
        response = requests.post(
            base_url + path, data=body, headers=headers, timeout=_READ_TIMEOUT_S
        )
    except requests.Timeout:
        return Answer(None, "", b"", time.monotonic() - start, "timeout")
    except requests.ConnectionError as error:
        return Answer(None, "", b"", time.monotonic() - start, f"connection dropped: {error}")
    return Answer(
        response.status_code,
        response.headers.get("Content-Type", ""),
        response.content,
        time.monotonic() - start,
    )


def _header_bytes(value: str) -> bytes:
    """Latin-1 where it can (what WSGI decodes headers with), else UTF-8."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


def send_raw(base_url: str, request: bytes) -> Answer:
    """Write request bytes to a socket, half-close it, and read the answer until EOF."""
    host, port = base_url.removeprefix("http://").split(":")
    start = time.monotonic()
    deadline = start + _READ_TIMEOUT_S
    received = b""
    with socket.create_connection((host, int(port)), timeout=_READ_TIMEOUT_S) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)  # the body ends here, whatever it claimed
        except OSError:
            pass  # the server may answer (413) and close before reading everything
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError as error:
                if not received:
                    return Answer(
                        None, "", b"", time.monotonic() - start, f"connection dropped: {error}"
                    )
                break
            if not chunk:
                break
            received += chunk
        else:
            if not received:
                return Answer(None, "", b"", time.monotonic() - start, "timeout")
    elapsed = time.monotonic() - start
    if not received:
        return Answer(None, "", b"", elapsed, "connection closed without an answer")
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Answer(None, "", received, elapsed, f"not HTTP: {lines[0][:80]!r}")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    if "chunked" in headers.get("transfer-encoding", ""):
        body = _unchunk(body)
    return Answer(status, headers.get("content-type", ""), body, elapsed)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


class RssSampler:
    """Sample the summed RSS of a process tree in a thread; report the peak since a mark."""

    def __init__(self, root_pid: int, interval_s: float = 0.02) -> None:
        self._root = psutil.Process(root_pid)
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._peak = 0
        self._current = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._current = self._peak = self._sample(self._processes())
        self._thread.start()
        return self

    def _processes(self) -> list[psutil.Process]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []

    @staticmethod
    def _sample(processes: list[psutil.Process]) -> int:
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        processes = self._processes()
        refreshed = time.monotonic()
        while not self._stop.wait(self._interval_s):
            if time.monotonic() - refreshed > 0.25:  # a crashed worker is replaced: re-list
                processes = self._processes()
                refreshed = time.monotonic()
            value = self._sample(processes)
            with self._lock:
                self._current = value
                self._peak = max(self._peak, value)

    def mark(self) -> int:
        """Reset the peak to the current RSS; return it."""
        value = self._sample(self._processes())
        with self._lock:
            self._current = self._peak = value
        return value

    def peak(self) -> int:
        with self._lock:
            return self._peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass(frozen=True)
class NormalRequest:
    """One request of the background client."""

    start: float
    end: float
    status: int | None
    error: str = ""


class BackgroundClient:
    """Send a valid image to /predict again and again in a thread (bounded in count and time)."""

    def __init__(
        self,
        url: str,
        image: bytes,
        *,
        pause_s: float = 0.02,
        max_requests: int = 20_000,
        max_duration_s: float = 1800.0,
    ) -> None:
        self._url = url
        self._image = image
        self._pause_s = pause_s
        self._max_requests = max_requests
        self._max_duration_s = max_duration_s
        self._lock = threading.Lock()
        self.requests: list[NormalRequest] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="normal-client", daemon=True)

    def start(self) -> BackgroundClient:
        self._thread.start()
        return self

    def _run(self) -> None:
        began = time.monotonic()
        session = requests.Session()
        while (
            not self._stop.is_set()
            and len(self.requests) < self._max_requests
            and time.monotonic() - began < self._max_duration_s
        ):
            start = time.monotonic()
            try:
                response = session.post(
                    self._url, data=self._image, headers={"Content-Type": "image/jpeg"}, timeout=15
                )
                record = NormalRequest(start, time.monotonic(), response.status_code)
            except requests.RequestException as error:
                record = NormalRequest(start, time.monotonic(), None, type(error).__name__)
                session = requests.Session()
            with self._lock:
                self.requests.append(record)
            self._stop.wait(self._pause_s)

    def overlapping(self, start: float, end: float) -> list[NormalRequest]:
        """Return the finished requests whose time overlaps [start, end]."""
        with self._lock:
            return [r for r in self.requests if r.end >= start and r.start <= end]

    def finished_after(self, moment: float) -> bool:
        """Return whether a request that started after moment has finished."""
        with self._lock:
            return any(r.start > moment for r in self.requests)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)


def wait_idle(root_pid: int, timeout_s: float = 60.0, window_s: float = 0.15) -> bool:
    """Wait until the process tree uses under a quarter of a core; return whether it did.

    A decode the client gave up on goes on in its worker thread: waiting for it keeps its
    cost out of the next case's figures.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            tree = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
        except psutil.Error:
            return False
        before = _cpu_seconds(tree)
        time.sleep(window_s)
        if _cpu_seconds(tree) - before < window_s / 4:
            return True
    return False


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
