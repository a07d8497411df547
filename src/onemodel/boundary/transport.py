"""The manager's wire: multiprocessing connections with TCP_NODELAY and bounded handshakes."""

from __future__ import annotations

import socket
import struct
from multiprocessing import connection, managers

# Name under which our transport is registered in multiprocessing.managers.listener_client.
TRANSPORT = "onemodel"
HANDSHAKE_TIMEOUT_S = 3.0
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
