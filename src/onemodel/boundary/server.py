"""The manager server: serves the ONE shared object to every client over the transport."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import traceback
from collections.abc import Iterator
from multiprocessing import AuthenticationError, connection, managers
from typing import Any

from onemodel.boundary.contract import EXPOSED_METHODS, ModelBackend
from onemodel.boundary.transport import (
    TRANSPORT,
    HandshakeGuard,
    install_transport,
    set_socket_options,
)
from onemodel.settings import Address

logger = logging.getLogger(__name__)


class _Server(managers.Server):
    """The stdlib manager server, but refused handshakes are logged (never the key itself)
    and every handshake is bounded as a whole, in time and in number (HandshakeGuard).

    The stdlib answers a client with a wrong authkey silently; operators need to see it.
    The rest mirrors ``managers.Server._handle_request``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = HandshakeGuard()

    def _handle_request(self, conn: connection.Connection) -> None:
        ticket = self.guard.start(conn.fileno())
        try:
            connection.deliver_challenge(conn, self.authkey)  # type: ignore[attr-defined]
            connection.answer_challenge(conn, self.authkey)  # type: ignore[attr-defined]
        except AuthenticationError:
            logger.warning("refused a client: failed authkey handshake")
            return
        except (OSError, EOFError) as error:
            logger.debug("a client left during the handshake (%s)", type(error).__name__)
            return
        finally:
            self.guard.done(ticket)
        set_socket_options(conn.fileno(), nodelay=isinstance(self.address, tuple), timeout_s=None)
        request = None
        try:
            request = conn.recv()
            _ignored, function_name, args, kwds = request
            if function_name not in self.public:
                raise ValueError(f"{function_name!r} unrecognized")
            function = getattr(self, function_name)
        except Exception:
            message: tuple[str, Any] = ("#TRACEBACK", traceback.format_exc())
        else:
            try:
                message = ("#RETURN", function(conn, *args, **kwds))
            except Exception:
                message = ("#TRACEBACK", traceback.format_exc())
        try:
            conn.send(message)
        except Exception:
            logger.debug("could not answer a manager request %r", request, exc_info=True)


def create_server(service: ModelBackend, address: Address, authkey: bytes) -> managers.Server:
    """Bind a manager server for the one service at address (not yet serving)."""
    install_transport()

    class ServingManager(managers.BaseManager):
        """A manager class private to this server, so registration leaves no global state."""

    # A callable returning the one instance: registering the class would build a new model
    # object for every client.
    ServingManager.register(
        "model", callable=lambda: service, proxytype=None, exposed=EXPOSED_METHODS
    )
    if address.path is not None:
        _remove_stale_socket(address.path)
    # 0600 socket: only the owner may connect.
    with _umask(0o177):
        return _Server(
            ServingManager._registry,  # type: ignore[attr-defined]
            address.for_multiprocessing(),
            authkey,
            TRANSPORT,
        )


def _remove_stale_socket(path: str) -> None:
    """Remove a Unix socket left by a dead server; refuse to touch anything else."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    else:
        raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
    finally:
        probe.close()


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)
