"""The manager's wire: multiprocessing connections with TCP_NODELAY and bounded handshakes."""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import struct
import threading
import time
from collections import OrderedDict
from multiprocessing import connection, managers

logger = logging.getLogger(__name__)

# Name under which our transport is registered in multiprocessing.managers.listener_client.
TRANSPORT = "onemodel"
HANDSHAKE_TIMEOUT_S = 3.0  # per read, both sides
# The server's bound on a whole authkey handshake (a real one takes milliseconds), and on
# how many connections may be in one at once: past it, the oldest waiting one is cut.
HANDSHAKE_DEADLINE_S = 5.0
MAX_PENDING_HANDSHAKES = 64
_LOG_INTERVAL_S = 10.0
CONNECT_TIMEOUT_S = 3.0


def set_socket_options(fd: int, nodelay: bool, timeout_s: float | None) -> None:
    """Set TCP_NODELAY and the receive/send timeouts on a connected socket by descriptor."""
    sock = socket.socket(fileno=fd)
    try:
        if nodelay:
            # multiprocessing writes a 4-byte header then the payload for messages over 16 KB;
            # with Nagle's algorithm and delayed ACKs that costs ~40 ms per call.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        seconds = timeout_s or 0.0
        timeval = struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    finally:
        sock.detach()


class Listener(connection.Listener):
    """A multiprocessing Listener whose accepted TCP connections have TCP_NODELAY set.

    Accepted connections start with a receive timeout so that a client which never
    completes the handshake cannot hold a server thread forever; the server lifts it after.
    """

    def accept(self) -> connection.Connection:
        conn = super().accept()
        set_socket_options(conn.fileno(), nodelay=self._is_tcp(), timeout_s=HANDSHAKE_TIMEOUT_S)
        return conn

    def _is_tcp(self) -> bool:
        return isinstance(self.address, tuple)


def client(
    address: tuple[str, int] | str, family: str | None = None, authkey: bytes | None = None
) -> connection.Connection:
    """Connect like ``multiprocessing.connection.Client``, with NODELAY and bounded waits.

    A stopped (SIGSTOP) or wedged server still accepts TCP/Unix connections into its backlog,
    so an unbounded handshake would hang the caller; here it fails after a few seconds. The
    timeouts stay on afterwards: the manager's own set-up calls (dummy, create, incref,
    accept_connection) read their replies without one, and predictions poll before reading.
    """
    is_tcp = isinstance(address, tuple)
    sock = socket.socket(socket.AF_INET if is_tcp else socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(address)
        sock.setblocking(True)
    except BaseException:
        sock.close()
        raise
    conn = connection.Connection(sock.detach())
    try:
        set_socket_options(conn.fileno(), nodelay=is_tcp, timeout_s=HANDSHAKE_TIMEOUT_S)
        if authkey is not None:
            connection.answer_challenge(conn, authkey)
            connection.deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise
    return conn


def install_transport() -> None:
    """Register our Listener/Client pair with multiprocessing.managers (idempotent)."""
    managers.listener_client.setdefault(TRANSPORT, (Listener, client))  # type: ignore[attr-defined]


class HandshakeGuard:
    """Cut unauthenticated connections at a deadline, and the oldest when too many wait.

    A per-read timeout lets a client that trickles a byte per interval hold a server thread
    for as long as it likes; here the whole exchange has one deadline, enforced by one
    watchdog thread that shuts the socket down (the blocked read then ends). The handling
    thread calls done() before it closes the connection, so a cut never hits a reused fd.
    """

    def __init__(
        self,
        deadline_s: float = HANDSHAKE_DEADLINE_S,
        max_pending: int = MAX_PENDING_HANDSHAKES,
    ) -> None:
        self._deadline_s = deadline_s
        self._max_pending = max_pending
        self._lock = threading.Condition()
        self._pending: OrderedDict[int, int] = OrderedDict()  # ticket -> fd, oldest first
        self._deadlines: list[tuple[float, int]] = []
        self._tickets = itertools.count()
        self._watchdog: threading.Thread | None = None
        self._unlogged: dict[str, int] = {}  # cuts not yet logged, by reason
        self._logged_at: dict[str, float] = {}

    def start(self, fd: int) -> int:
        """Watch a new connection's handshake; return the ticket to pass to done()."""
        with self._lock:
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="handshake-watchdog", daemon=True
                )
                self._watchdog.start()
            while len(self._pending) >= self._max_pending:
                self._cut(next(iter(self._pending)), "too many pending handshakes")
            ticket = next(self._tickets)
            self._pending[ticket] = fd
            heapq.heappush(self._deadlines, (time.monotonic() + self._deadline_s, ticket))
            self._lock.notify()
            return ticket

    def done(self, ticket: int) -> None:
        """Stop watching a handshake that ended, either way."""
        with self._lock:
            self._pending.pop(ticket, None)

    @property
    def pending(self) -> int:
        """Return how many handshakes are under way."""
        with self._lock:
            return len(self._pending)

    def _watch(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                while self._deadlines and (
                    self._deadlines[0][0] <= now or self._deadlines[0][1] not in self._pending
                ):
                    _, ticket = heapq.heappop(self._deadlines)
                    if ticket in self._pending:
                        self._cut(ticket, "handshake deadline passed")
                self._lock.wait(self._deadlines[0][0] - now if self._deadlines else None)

    def _cut(self, ticket: int, why: str) -> None:
        """Shut a pending connection down (lock held)."""
        sock = socket.socket(fileno=self._pending.pop(ticket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.detach()
        self._unlogged[why] = self._unlogged.get(why, 0) + 1
        now = time.monotonic()
        # One line per reason and interval, not one per cut: an attack must not flood logs.
        if now - self._logged_at.get(why, float("-inf")) >= _LOG_INTERVAL_S:
            logger.warning(
                "cut %d unauthenticated model-server connection(s): %s (deadline %g s, "
                "at most %d at once)",
                self._unlogged.pop(why),
                why,
                self._deadline_s,
                self._max_pending,
            )
            self._logged_at[why] = now
