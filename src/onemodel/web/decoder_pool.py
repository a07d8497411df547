"""The decode sandbox of one web worker: a pool of limited, restartable decoder processes.

Untrusted bytes are decoded and resized in ``python -m onemodel.web.decoder_process``
children, never in the worker. Each child caps its own address space and CPU time; the pool
adds a wall-clock deadline per decode and watches the client's socket. A child that crashes,
runs out of memory, overruns its deadline or outlives its client is killed, and that one
request gets InvalidImageError; the next request gets a fresh child.

Children are started with ``subprocess`` (fork and exec of a new interpreter, which
``_posixsubprocess`` does without running Python code in between): a gthread worker has
threads, and a plain ``fork`` would copy locks other threads hold. A multiprocessing
forkserver would have to be started before those threads exist, in a hook of the master,
and would pickle every request; a pipe with a fixed frame does not.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO

import numpy as np

from onemodel.errors import (
    InvalidImageError,
    OneModelError,
    OverloadedError,
    TooManyPixelsError,
    UnsupportedMediaTypeError,
)
from onemodel.web.decoder_protocol import (
    MAX_ERROR_BYTES,
    READY,
    REPLY,
    REQUEST,
    REQUEST_MAGIC,
    STATUS_OK,
)

logger = logging.getLogger(__name__)

# Errors a decoder may report, by code; anything else becomes InvalidImageError.
_ERRORS: Mapping[str, type[OneModelError]] = {
    error.code: error
    for error in (InvalidImageError, TooManyPixelsError, UnsupportedMediaTypeError)
}
_UNDECODABLE = "the image could not be decoded"
# Seconds a new decoder may take to start (an interpreter and OpenCV; about 0.3 s idle).
START_TIMEOUT_S = 60.0
# The reply pipe's capacity (Linux's default pipe-max-size for unprivileged processes).
REPLY_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class DecoderFailedError(InvalidImageError):
    """A decoder process crashed, ran out of memory or time: the image is not decodable."""


class _ClientGoneError(Exception):
    """The client closed its connection while its image was being decoded."""


class DecoderPool:
    """Up to ``processes`` decoder processes, shared by the worker's request threads.

    The number of processes is the worker's decode budget: each process is capped at
    ``memory_bytes`` of address space above its idle size, so the worker's decoding never
    holds more than ``processes * memory_bytes`` however many requests arrive; more
    concurrent requests wait for a free process.
    """

    def __init__(
        self,
        *,
        processes: int,
        memory_bytes: int,
        timeout_s: float,
        max_pixels: int,
        wait_s: float,
        cpu_s: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # RLIMIT_CPU has a one-second grain; the wall-clock deadline is the finer bound.
        self._cpu_s = cpu_s if cpu_s is not None else max(1, math.ceil(timeout_s))
        self._wait_s = wait_s
        self._memory_bytes = memory_bytes
        self._timeout_s = timeout_s
        self._max_pixels = max_pixels
        self._environ = dict(os.environ if environ is None else environ)
        self._slots = threading.BoundedSemaphore(processes)
        self._lock = threading.Lock()
        self._idle: list[_Decoder] = []
        self._running: set[_Decoder] = set()
        self._closed = False

    def prepare(
        self,
        data: bytes,
        size: tuple[int, int],
        client: socket.socket | None = None,
    ) -> np.ndarray:
        """Decode and resize ``data`` to RGB uint8 (height, width, 3) in a decoder process.

        Waits up to ``wait_s`` for a free process (OverloadedError after that). If
        ``client`` is given and closes while decoding, the decode is killed.
        """
        if not self._slots.acquire(timeout=self._wait_s):
            raise OverloadedError("every image decoder of this worker is busy; retry later")
        try:
            decoder = self._checkout()
            try:
                pixels = decoder.decode(data, size, self._timeout_s, client)
            except DecoderFailedError:
                self._discard(decoder)
                raise
            except OneModelError:
                self._checkin(decoder)  # the decoder itself refused the image: still sound
                raise
            except BaseException:
                self._discard(decoder)
                raise
            self._checkin(decoder)
            return pixels
        finally:
            self._slots.release()

    def warm(self) -> None:
        """Start one decoder process now, so the first upload does not wait for it.

        Returns at once: the child starts its interpreter while the worker goes on (a
        decode waits for its ready byte). Failing to start is logged, not raised: the first
        upload tries again.
        """
        with self._lock:
            if self._closed or self._running:
                return
        try:
            decoder = _Decoder(self._command(), self._child_environ())
        except OSError as error:
            logger.warning("cannot start an image decoder ahead of the first upload: %s", error)
            return
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._running.add(decoder)
                self._idle.append(decoder)
        if closed:
            decoder.stop()

    def pids(self) -> set[int]:
        """Return the pids of the running decoder processes."""
        with self._lock:
            return {decoder.pid for decoder in self._running}

    def close(self) -> None:
        """Stop every decoder process."""
        with self._lock:
            self._closed = True
            decoders = list(self._running)
            self._running.clear()
            self._idle.clear()
        for decoder in decoders:
            decoder.stop()

    def _checkout(self) -> _Decoder:
        with self._lock:
            if self._closed:
                raise OverloadedError("the image decoders are shutting down")
            while self._idle:
                decoder = self._idle.pop()
                if decoder.alive():
                    return decoder
                # Died while idle (say, the kernel's OOM killer): not this upload's fault.
                self._running.discard(decoder)
                decoder.kill()
        try:
            decoder = _Decoder(self._command(), self._child_environ())
        except OSError as error:
            logger.error("cannot start an image decoder: %s", error)
            raise OverloadedError("no image decoder could be started; retry later") from None
        with self._lock:
            self._running.add(decoder)
        return decoder

    def _checkin(self, decoder: _Decoder) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(decoder)
                return
        decoder.stop()

    def _discard(self, decoder: _Decoder) -> None:
        decoder.kill()
        with self._lock:
            self._running.discard(decoder)

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "onemodel.web.decoder_process",
            "--memory-bytes",
            str(self._memory_bytes),
            "--cpu-s",
            str(self._cpu_s),
            "--max-pixels",
            str(self._max_pixels),
        ]

    def _child_environ(self) -> dict[str, str]:
        environ = dict(self._environ)
        environ.update(
            # OpenCV checks this on the size its own decoders read, before allocating.
            OPENCV_IO_MAX_IMAGE_PIXELS=str(self._max_pixels),
            OPENCV_LOG_LEVEL="ERROR",
            # One thread everywhere: each thread's stack would count against RLIMIT_AS.
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            OPENCV_FOR_THREADS_NUM="1",
            MALLOC_ARENA_MAX="1",
        )
        return environ


class _Decoder:
    """One decoder process and the pipes to it."""

    def __init__(self, command: list[str], environ: Mapping[str, str]) -> None:
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(environ),
            bufsize=0,
            close_fds=True,
        )
        requests, replies = self._process.stdin, self._process.stdout
        assert requests is not None and replies is not None
        self._requests: IO[bytes] = requests
        self._replies: IO[bytes] = replies
        for stream in (requests, replies):
            flags = fcntl.fcntl(stream.fileno(), fcntl.F_GETFL)
            fcntl.fcntl(stream.fileno(), fcntl.F_SETFL, flags | os.O_NONBLOCK)
        _enlarge_pipe(replies.fileno())
        self.pid = self._process.pid
        self._started = time.monotonic()
        self._ready = False

    def decode(
        self,
        data: bytes,
        size: tuple[int, int],
        timeout_s: float,
        client: socket.socket | None,
    ) -> np.ndarray:
        """Send one request and return the decoded pixels, or raise a OneModelError.

        The decode has ``timeout_s`` from the moment the process is ready: starting an
        interpreter on a busy machine must not count against the image.
        """
        height, width = size
        watch = _ClientWatch(client)
        try:
            if not self._ready:
                self._await_ready(watch)
            deadline = time.monotonic() + timeout_s
            header = REQUEST.pack(REQUEST_MAGIC, height, width, len(data))
            self._send([header, data], deadline, watch)
            status, got_height, got_width, length = REPLY.unpack(
                self._receive(REPLY.size, deadline, watch)
            )
            if status != STATUS_OK:
                if length > MAX_ERROR_BYTES:
                    raise DecoderFailedError(_UNDECODABLE)
                code, _, message = self._receive(length, deadline, watch).decode().partition("\n")
                raise _ERRORS.get(code, InvalidImageError)(message or _UNDECODABLE)
            if (got_height, got_width) != size or length != height * width * 3:
                raise DecoderFailedError(_UNDECODABLE)
            pixels = np.empty((height, width, 3), dtype=np.uint8)
            self._receive_into(pixels.data.cast("B"), deadline, watch)
            return pixels
        except TimeoutError:
            logger.warning("image decoder %d overran its deadline; killed", self.pid)
            raise DecoderFailedError(f"{_UNDECODABLE} in time") from None
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise DecoderFailedError(self._death_message()) from None
        except _ClientGoneError:
            logger.info("client left while decoder %d was decoding; killed", self.pid)
            raise DecoderFailedError("the client closed the connection") from None

    def _await_ready(self, watch: _ClientWatch) -> None:
        try:
            signal_byte = self._receive(1, self._started + START_TIMEOUT_S, watch)
        except TimeoutError:
            logger.error("image decoder %d did not start in %g s", self.pid, START_TIMEOUT_S)
            raise DecoderFailedError(_UNDECODABLE) from None
        if signal_byte != READY:
            raise EOFError
        self._ready = True

    def alive(self) -> bool:
        """Return whether the process is still running."""
        return self._process.poll() is None

    def kill(self) -> None:
        """Kill the process now and reap it."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._close_pipes()

    def stop(self) -> None:
        """Close the request pipe (the process exits at end of input), then make sure."""
        self._close_pipes()
        try:
            self._process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.kill()

    def _close_pipes(self) -> None:
        for stream in (self._requests, self._replies):
            try:
                stream.close()
            except OSError:
                pass

    def _death_message(self) -> str:
        try:
            code = self._process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return _UNDECODABLE
        if code < 0:
            name = signal.Signals(-code).name
            logger.warning("image decoder %d died of %s on an upload", self.pid, name)
            if -code == signal.SIGXCPU:
                return f"{_UNDECODABLE}: it needs too much CPU time"
        else:
            logger.warning("image decoder %d exited with status %d on an upload", self.pid, code)
        return f"{_UNDECODABLE}: the decoder failed on it"

    def _send(self, buffers: list[bytes], deadline: float, watch: _ClientWatch) -> None:
        # One writev for the header and the bytes; poll only when the pipe is full.
        views = [memoryview(buffer) for buffer in buffers if buffer]
        fd = self._requests.fileno()
        while views:
            try:
                written = os.writev(fd, views)
            except BlockingIOError:
                watch.wait(fd, select.POLLOUT, deadline)
                continue
            while written:
                if written >= len(views[0]):
                    written -= len(views.pop(0))
                else:
                    views[0] = views[0][written:]
                    written = 0

    def _receive(self, length: int, deadline: float, watch: _ClientWatch) -> bytes:
        buffer = bytearray(length)
        self._receive_into(memoryview(buffer), deadline, watch)
        return bytes(buffer)

    def _receive_into(self, view: memoryview, deadline: float, watch: _ClientWatch) -> None:
        # Read what is there first: the pixels usually follow their header at once.
        fd = self._replies.fileno()
        while view:
            try:
                count = os.readv(fd, [view])
            except BlockingIOError:
                watch.wait(fd, select.POLLIN, deadline)
                continue
            if count == 0:
                raise EOFError
            view = view[count:]


def _enlarge_pipe(fd: int) -> None:
    """Let a whole reply (224x224x3 pixels are 150 KB) fit in the pipe: one write, one read.

    Linux's default pipe holds 64 KB, so a reply took three rounds of write, wake-up and
    read. Pages are only allocated as data is written; where the kernel refuses (the
    user's pipe-buffer quota), the default size simply stays.
    """
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, REPLY_PIPE_BYTES)
    except OSError:
        pass


class _ClientWatch:
    """Poll a decoder pipe, and the client's socket for a hang-up, until a deadline."""

    def __init__(self, client: socket.socket | None) -> None:
        self._client = client

    def wait(self, fd: int, events: int, deadline: float) -> None:
        """Return when ``fd`` is ready; raise TimeoutError or _ClientGoneError."""
        poller = select.poll()
        poller.register(fd, events | select.POLLERR | select.POLLHUP)
        client_fd = self._client_fd()
        if client_fd is not None:
            poller.register(client_fd, select.POLLIN | select.POLLRDHUP)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready = poller.poll(max(1, int(remaining * 1000)))
            for ready_fd, _ in ready:
                if ready_fd == client_fd and self._client_closed():
                    raise _ClientGoneError
            if any(ready_fd == fd for ready_fd, _ in ready):
                return
            if client_fd is not None and any(ready_fd == client_fd for ready_fd, _ in ready):
                # Readable but not closed: a pipelined request. Stop watching the socket.
                poller.unregister(client_fd)
                self._client = None
                client_fd = None

    def _client_fd(self) -> int | None:
        if self._client is None:
            return None
        try:
            fd = self._client.fileno()
        except OSError:
            return None
        return fd if fd >= 0 else None

    def _client_closed(self) -> bool:
        assert self._client is not None
        try:
            return self._client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
