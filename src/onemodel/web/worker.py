"""The Gunicorn worker class: a thread is given to a request only once it has fully arrived.

Gunicorn's gthread worker hands a connection to a thread as soon as it is readable; the
thread then blocks reading the rest of the request for as long as the client cares to
send it, so a few dozen slow clients hold every thread (slowloris). This worker reads
requests in its event loop instead, without blocking, like a buffering proxy would: the
head must arrive within ``REQUEST_HEADER_TIMEOUT_S`` of its first byte and the body
within ``REQUEST_BODY_TIMEOUT_S`` of the head, and only a complete request (at most
``MAX_UPLOAD_BYTES`` of body) is given to a thread. Idle connections cost no thread either:
when the worker holds ``worker_connections`` it closes its oldest idle one to accept a
new one, and buffered bytes per worker are capped by ``MAX_BUFFERED_REQUEST_BYTES``.
Errors Gunicorn itself raises (bad request line, header limits, unknown transfer coding)
are answered in the service's JSON error shape with an ``X-Request-ID``.

Runs in Gunicorn worker processes; imports Gunicorn, settings and errors only.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.arbiter import Arbiter
from gunicorn.http import errors as http_errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import TConn, ThreadWorker

from onemodel import errors
from onemodel.settings import Settings
from onemodel.web.request_framing import (
    FramingLimits,
    RequestScanner,
    Verdict,
    request_id_in,
    request_path_in,
)
from onemodel.web.request_ids import REQUEST_ID_HEADER, sane_request_id

# How long a closing connection may keep sending (its bytes are discarded) after its
# answer, so the kernel does not reset it before the client has read that answer.
LINGER_S = 2.0
# A thread's socket reads and writes give up after this long without progress: a
# backstop, as the thread only ever gets complete requests and small answers.
THREAD_IO_TIMEOUT_S = 10.0
_RECV_BYTES = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(eq=False)
class _Reading:
    """A connection whose next request is still arriving."""

    conn: TConn
    scanner: RequestScanner
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    body_started: bool = False


@dataclass(eq=False)
class _Lingering:
    """A connection that was answered and is being closed."""

    conn: TConn
    deadline: float


class GuardedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, but requests are read in the event loop with deadlines (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading: dict[int, _Reading] = {}  # by fd, oldest first
        self._lingering: dict[int, _Lingering] = {}
        self._buffered_bytes = 0

    def init_process(self) -> None:
        if not _plain_http(self.cfg):
            # Checked here, not in check_config: that runs after on_starting started a
            # model server, and an exception there would leave it behind.
            self.log.error(
                "onemodel's worker reads plain HTTP/1.1 only: terminate TLS, HTTP/2 and the "
                "PROXY protocol in front of Gunicorn"
            )
            sys.exit(Arbiter.WORKER_BOOT_ERROR)  # the master stops, saying a worker failed
        settings = Settings.from_env()
        self._header_timeout_s = settings.request_header_timeout_s
        self._body_timeout_s = settings.request_body_timeout_s
        self._max_buffered_bytes = settings.request_buffer_bytes
        self._limits = FramingLimits(
            max_head_bytes=_max_head_bytes(self.cfg), max_body_bytes=settings.max_upload_bytes
        )
        super().init_process()  # runs the worker: everything above must be set first

    def load_wsgi(self) -> None:
        super().load_wsgi()
        from onemodel.web.runtime import EXTENSION, Runtime  # noqa: PLC0415  (the master never needs Flask)

        # Start a decoder process while the worker waits for its first request (and the
        # model server for its model), not during the first upload.
        extensions = getattr(self.wsgi, "extensions", None)
        runtime = extensions.get(EXTENSION) if isinstance(extensions, dict) else None
        if isinstance(runtime, Runtime):
            runtime.decoder.warm()

    # -- connections arrive ------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())
        self._read_next_request(conn, b"", fresh=True)
        if self.nr_conns >= self.worker_connections:
            self._evict_one()

    def _read_next_request(self, conn: TConn, already: bytes, *, fresh: bool = False) -> None:
        """Wait, in the event loop, for the next request on conn (some bytes may be here)."""
        now = time.monotonic()
        # A new connection has the head deadline to start; a kept-alive one, keepalive.
        timeout = self._header_timeout_s if already or fresh else self.cfg.keepalive
        if not self.alive:
            timeout = min(timeout, 2.0)
        reading = _Reading(conn, RequestScanner(self._limits), now + timeout, bytearray(already))
        conn.sock.setblocking(False)
        self._reading[conn.sock.fileno()] = reading
        self._buffered_bytes += len(already)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, reading))
        if already:
            self._judge(reading)

    def _on_readable(self, reading: _Reading, sock: socket.socket) -> None:
        try:
            data = sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away, or half-closed with a request unfinished
            if reading.buffer:
                # It may still read: say why its request can never be served.
                incomplete = errors.MalformedRequestError(
                    "the connection was closed before the request was complete"
                )
                self._answer(reading, incomplete, linger=False)
                return
            self._forget(reading)
            self._close(reading.conn)
            return
        if not reading.buffer:  # the first byte of a request starts its head deadline
            reading.deadline = time.monotonic() + self._header_timeout_s
        reading.buffer += data
        self._buffered_bytes += len(data)
        if self._buffered_bytes > self._max_buffered_bytes:
            self._shed_buffers()
            if reading.conn.sock.fileno() not in self._reading:
                return
        self._judge(reading)

    def _judge(self, reading: _Reading) -> None:
        verdict = reading.scanner.feed(reading.buffer)
        if verdict is Verdict.NEED_MORE:
            if reading.scanner.waiting_for_body and not reading.body_started:
                reading.body_started = True
                reading.deadline = time.monotonic() + self._body_timeout_s
                head = reading.scanner.head
                if head is not None and head.expects_continue:
                    _send_quietly(reading.conn.sock, _CONTINUE)
            return
        if verdict is Verdict.REJECT:
            assert reading.scanner.error is not None
            self._answer(reading, reading.scanner.error, linger=True)
            return
        self._dispatch(reading)

    def _dispatch(self, reading: _Reading) -> None:
        """Give a thread the request (or the head Gunicorn must judge): it is all here."""
        self._forget(reading)
        conn = reading.conn
        conn.init()  # the HTTP/1.1 parser (no TLS, no HTTP/2: check_config makes sure)
        conn.sock.setblocking(True)
        _set_io_timeout(conn.sock, THREAD_IO_TIMEOUT_S)
        conn.parser.unreader.unread(bytes(reading.buffer))
        conn.data_ready = True
        self.enqueue_req(conn)

    # -- a request was answered ----------------------------------------------------------

    def finish_request(self, conn: TConn, future: Any) -> None:
        try:
            keep_alive = bool(future.result()) if not future.cancelled() else False
        except Exception:
            keep_alive = False
        try:
            if keep_alive:
                # A pipelined next request may already be in the parser's buffer.
                self._read_next_request(conn, conn.parser.unreader.take_buffered())
            else:
                self._linger(conn)
        except (OSError, ValueError):
            self._close(conn)

    # -- deadlines, limits, closing ------------------------------------------------------

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for reading in [r for r in self._reading.values() if r.deadline <= now]:
            if reading.buffer:
                self._answer(reading, errors.RequestTimeoutError(), linger=False)
            else:  # an idle keep-alive or a connection that never spoke
                self._forget(reading)
                self._close(reading.conn)
        for lingering in [item for item in self._lingering.values() if item.deadline <= now]:
            self._unlinger(lingering)

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        if force:
            for reading in list(self._reading.values()):
                self._forget(reading)
                self._close(reading.conn)
            for lingering in list(self._lingering.values()):
                self._unlinger(lingering)

    def _cap_keepalive(self, deadline: float) -> None:
        super()._cap_keepalive(deadline)
        for reading in self._reading.values():
            if not reading.buffer:
                reading.deadline = min(reading.deadline, deadline)

    def _evict_one(self) -> None:
        """Make room for a new connection: close a lingering, an idle, or the oldest reader."""
        if self._lingering:
            self._unlinger(next(iter(self._lingering.values())))
            return
        idle = next((r for r in self._reading.values() if not r.buffer), None)
        if idle is not None:
            self._forget(idle)
            self._close(idle.conn)
            return
        if self._reading:
            oldest = next(iter(self._reading.values()))
            self._answer(oldest, errors.ServerBusyError(), linger=False)

    def _shed_buffers(self) -> None:
        """Over the buffer budget: drop the requests that have been arriving the longest."""
        while self._buffered_bytes > self._max_buffered_bytes:
            oldest = next((r for r in self._reading.values() if r.buffer), None)
            if oldest is None:
                return
            self._answer(oldest, errors.ServerBusyError(), linger=False)

    def _answer(self, reading: _Reading, error: errors.OneModelError, *, linger: bool) -> None:
        """Answer from the event loop (never blocking) and close the connection."""
        self._forget(reading)
        request_id = sane_request_id(request_id_in(reading.buffer))
        self.log.warning(
            "refused a request from ip=%s: status=%s code=%s request_id=%s",
            _ip(reading.conn.client),
            error.status,
            error.code,
            request_id,
        )
        answer = error_response(error, request_id, request_path_in(reading.buffer))
        _send_quietly(reading.conn.sock, answer)
        if linger:
            self._linger(reading.conn)
        else:
            self._close(reading.conn)

    def _forget(self, reading: _Reading) -> None:
        fd = reading.conn.sock.fileno()
        if self._reading.get(fd) is reading:
            del self._reading[fd]
            self._buffered_bytes -= len(reading.buffer)
            _unregister(self.poller, reading.conn.sock)

    def _linger(self, conn: TConn) -> None:
        """Close gracefully without blocking the loop: FIN, discard what still comes."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        lingering = _Lingering(conn, time.monotonic() + LINGER_S)
        self._lingering[conn.sock.fileno()] = lingering
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self._on_lingering_readable, lingering)
        )

    def _on_lingering_readable(self, lingering: _Lingering, sock: socket.socket) -> None:
        try:
            if sock.recv(_RECV_BYTES):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._unlinger(lingering)

    def _unlinger(self, lingering: _Lingering) -> None:
        fd = lingering.conn.sock.fileno()
        if self._lingering.get(fd) is lingering:
            del self._lingering[fd]
            _unregister(self.poller, lingering.conn.sock)
        self._close(lingering.conn)

    def _close(self, conn: TConn) -> None:
        self.nr_conns -= 1
        conn.close()

    # -- errors Gunicorn raises while parsing, in a thread ------------------------------

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        started = datetime.now()
        addr = addr or ("", -1)
        error = gunicorn_error(exc)
        if error is None:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
            error = errors.OneModelError()
        else:
            self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
            if req is None:
                req = getattr(exc, "req", None)
        payload = error_response(error, _request_id_of(req), getattr(req, "path", None) or "")
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"] = addr[0]
            environ["REMOTE_PORT"] = str(addr[1])
            response = Response(req, client, self.cfg)
            response.status = f"{error.status} {HTTPStatus(error.status).phrase}"
            response.response_length = len(payload)
            self.log.access(response, req, environ, datetime.now() - started)
        try:
            util.write_nonblock(client, payload)
        except Exception:
            self.log.debug("Failed to send error message.")


_CLIENT_ERRORS: tuple[tuple[type[BaseException], type[errors.OneModelError]], ...] = (
    (http_errors.LimitRequestLine, errors.RequestLineTooLongError),
    (http_errors.LimitRequestHeaders, errors.HeadersTooLargeError),
    (http_errors.UnsupportedTransferCoding, errors.UnsupportedTransferCodingError),
    (http_errors.ExpectationFailed, errors.ExpectationFailedError),
)
_SERVER_FAULTS = (
    http_errors.ConfigurationProblem,
    http_errors.InvalidResponseHeader,
    http_errors.InvalidResponseHeaderName,
)


def gunicorn_error(exc: BaseException) -> errors.OneModelError | None:
    """Return the client error a Gunicorn parse exception stands for (None: our fault)."""
    if not isinstance(exc, http_errors.ParseException) or isinstance(exc, _SERVER_FAULTS):
        return None
    detail = _short(str(exc))
    for gunicorn_class, our_class in _CLIENT_ERRORS:
        if isinstance(exc, gunicorn_class):
            return our_class(f"{our_class.default_message} ({detail})")
    return errors.MalformedRequestError(f"{errors.MalformedRequestError.default_message}: {detail}")


def error_response(error: errors.OneModelError, request_id: str | None, path: str = "") -> bytes:
    """Return a whole HTTP response carrying error as JSON, in the shape of path's API."""
    from onemodel.web.error_handlers import onemodel_shape, protocol_shape  # noqa: PLC0415

    # Imported here: this module is loaded by the Gunicorn master too (the worker class),
    # where nothing may import prometheus-client before its directory is set.
    shape = protocol_shape if path.startswith("/v2") else onemodel_shape
    body = json.dumps(shape(error.code, error.message), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        REQUEST_ID_HEADER: sane_request_id(request_id),
        **error.headers(),
    }
    head = f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return head.encode("latin-1") + b"\r\n" + body


def _plain_http(cfg: Any) -> bool:
    return bool(
        not cfg.is_ssl
        and cfg.proxy_protocol == "off"
        and getattr(cfg, "protocol", "http") == "http"
        and getattr(cfg, "http2_cleartext", "off") == "off"
        and list(getattr(cfg, "http_protocols", None) or ["h1"]) == ["h1"]
    )


def _max_head_bytes(cfg: Any) -> int:
    """Return a head size past Gunicorn's own limits, so its parser always gets to judge."""
    line = cfg.limit_request_line if 0 < cfg.limit_request_line <= 8190 else 8190
    fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= 32768 else 32768
    field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else 8190
    return line + 4 + fields * (field_size + 2) + 4


def _request_id_of(req: Any) -> str | None:
    for name, value in getattr(req, "headers", None) or []:
        if name == "X-REQUEST-ID":
            return str(value)
    return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _ip(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else "unix"


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the socket takes now; a client that does not read loses the rest."""
    try:
        sock.send(data)
    except OSError:
        pass


def _set_io_timeout(sock: socket.socket, seconds: float) -> None:
    # Kernel timeouts, not Python's: Gunicorn's thread resets the Python-level timeout
    # (setblocking(True)); SO_RCVTIMEO/SO_SNDTIMEO survive that.
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    except OSError:
        pass


def _unregister(poller: selectors.BaseSelector, sock: socket.socket) -> None:
    try:
        poller.unregister(sock)
    except (KeyError, ValueError, OSError):
        pass
