"""The web side of the manager socket: a reconnecting client with timed calls."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing import AuthenticationError, managers
from typing import Any

import numpy as np

from onemodel.boundary.contract import EXPOSED_METHODS, ModelInfo
from onemodel.boundary.transport import TRANSPORT, install_transport
from onemodel.errors import (
    InferenceTimeoutError,
    ModelChangedError,
    ModelUnavailableError,
    OneModelError,
)
from onemodel.settings import Address

logger = logging.getLogger(__name__)

# Extra time the client waits beyond a prediction's own timeout, so the server's 504 wins.
REPLY_GRACE_S = 1.0
# How often a waiting call asks whether its caller gave up on the server (see abandon).
ABANDON_POLL_S = 0.2


class ModelProxy(managers.BaseProxy):
    """Proxy to the shared service whose calls time out instead of hanging forever."""

    _exposed_ = EXPOSED_METHODS

    def call(
        self,
        method: str,
        args: tuple[Any, ...],
        timeout_s: float,
        abandon: Callable[[], bool] | None = None,
    ) -> Any:
        """Call a method on the shared service, waiting at most timeout_s for the reply.

        While waiting, abandon() (if given) is asked every ABANDON_POLL_S; when it returns
        True the call gives up at once with ModelUnavailableError (a pool that learnt the
        server is unreachable retries elsewhere instead of waiting out the timeout).
        """
        # BaseProxy keeps one connection per thread in self._tls (stdlib internals, untyped).
        tls: Any = self._tls  # type: ignore[attr-defined]
        try:
            conn = tls.connection
        except AttributeError:
            self._connect()  # type: ignore[attr-defined]
            conn = tls.connection
        try:
            conn.send((self._id, method, args, {}))  # type: ignore[attr-defined]
            answered = _wait_for_reply(conn, timeout_s, abandon)
            if answered:
                kind, result = conn.recv()
        except BaseException:
            # Half a message may have gone or come: this connection is unusable.
            del tls.connection
            conn.close()
            raise
        if not answered:
            # A late reply would desynchronise this connection: drop it, reconnect next time.
            del tls.connection
            conn.close()
            if answered is None:
                raise ModelUnavailableError("the model server stopped answering its health probe")
            raise InferenceTimeoutError(f"the model server did not answer within {timeout_s:g} s")
        if kind == "#RETURN":
            return result
        raise managers.convert_to_error(kind, result)  # type: ignore[attr-defined]


class ModelClient:
    """A worker's thread-safe handle on the model server; it reconnects by itself.

    Nothing connects until the first call, so building one in a module or a Gunicorn
    master is harmless; every thread gets its own manager connection.
    """

    def __init__(
        self,
        address: Address,
        authkey: bytes,
        info_timeout_s: float = 5.0,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._on_reconnect = on_reconnect
        self._address = address
        self._authkey = authkey
        self._info_timeout_s = info_timeout_s
        self._lock = threading.Lock()
        self._proxy: ModelProxy | None = None
        self._generation = 0
        self._spec: tuple[int, ModelInfo] | None = None
        self.reconnects = 0

    def predict(
        self,
        images: np.ndarray,
        timeout_s: float,
        version: str | None = None,
        abandon: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Return class scores for RGB uint8 images (N, H, W, 3), from ``version`` if given.

        abandon: asked while waiting; True gives up with ModelUnavailableError (see pool).
        """
        # The version is sent only when given, so a model server without versions still
        # understands us.
        args = (images, timeout_s) if version is None else (images, timeout_s, version)
        try:
            result = self._call("predict", args, timeout_s + REPLY_GRACE_S, abandon)
        except ModelChangedError:
            self._spec = None  # another version serves now: its input size and labels differ
            raise
        return np.asarray(result)

    def info(self) -> ModelInfo:
        """Return the model server's readiness, model details and limits."""
        info = self._call("info", (), self._info_timeout_s)
        if not isinstance(info, ModelInfo):
            raise ModelUnavailableError("the model server answered an unknown info type")
        cached = self._spec
        if cached is not None and cached[1].version != info.version:
            self._spec = None
        return info

    def metrics_text(self) -> bytes:
        """Return the model server's Prometheus exposition text."""
        return bytes(self._call("metrics_text", (), self._info_timeout_s))

    def spec(self) -> ModelInfo:
        """Return the ready model's info (cached per connection and per served version).

        A new server, or a new version on the same server (a predict for the cached version
        answers ModelChangedError), is read again.
        """
        _, generation = self._connected_proxy()
        cached = self._spec
        if cached is not None and cached[0] == generation:
            return cached[1]
        info = self.info()
        if not info.ready:
            raise ModelUnavailableError(info.reason or "the model is not ready")
        self._spec = (generation, info)
        return info

    def close(self) -> None:
        """Drop the connection (the next call reconnects)."""
        with self._lock:
            self._proxy = None
            self._generation += 1

    def _call(
        self,
        method: str,
        args: tuple[Any, ...],
        timeout_s: float,
        abandon: Callable[[], bool] | None = None,
    ) -> Any:
        # Every exposed method is free of side effects, so a call that met a dead connection
        # is tried once more on a fresh one: a restarted model server loses no request.
        for attempt in (1, 2):
            proxy, generation = self._connected_proxy()
            try:
                return proxy.call(method, args, timeout_s, abandon)
            except OneModelError:
                raise
            except (TimeoutError, BlockingIOError) as error:
                # Stopped or wedged, not gone: a second attempt would wait as long again, and
                # the proxy stays valid for when it resumes.
                raise ModelUnavailableError(_describe_connect_error(error)) from None
            except (OSError, EOFError, managers.RemoteError) as error:
                self._discard(generation)
                logger.debug(
                    "lost the model server at %s (%s); attempt %d",
                    self._address,
                    type(error).__name__,
                    attempt,
                )
        raise ModelUnavailableError("the model server connection was lost")

    def _connected_proxy(self) -> tuple[ModelProxy, int]:
        with self._lock:
            if self._proxy is not None:
                return self._proxy, self._generation
            try:
                self._proxy = self._connect()
            except (OSError, EOFError, AuthenticationError, managers.RemoteError) as error:
                raise ModelUnavailableError(_describe_connect_error(error)) from None
            if self._generation > 0:
                self.reconnects += 1
                if self._on_reconnect is not None:
                    self._on_reconnect()
            self._generation += 1
            return self._proxy, self._generation

    def _connect(self) -> ModelProxy:
        install_transport()

        class ClientManager(managers.BaseManager):
            """A manager class private to this client."""

        ClientManager.register("model", proxytype=ModelProxy, exposed=EXPOSED_METHODS)
        manager = ClientManager(
            address=self._address.for_multiprocessing(),
            authkey=self._authkey,
            serializer=TRANSPORT,
        )
        manager.connect()
        return manager.model()  # type: ignore[attr-defined,no-any-return]

    def _discard(self, generation: int) -> None:
        with self._lock:
            if self._generation == generation:
                self._proxy = None


def _wait_for_reply(conn: Any, timeout_s: float, abandon: Callable[[], bool] | None) -> bool | None:
    """Wait for a reply: True when it came, False on timeout, None when abandoned."""
    if abandon is None:
        return bool(conn.poll(timeout_s))
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if conn.poll(max(0.0, min(remaining, ABANDON_POLL_S))):
            return True
        if remaining <= ABANDON_POLL_S:
            return False
        if abandon():
            return None


def _describe_connect_error(error: BaseException) -> str:
    if isinstance(error, AuthenticationError):
        return "the model server refused our authkey (MODEL_SERVER_AUTHKEY differs)"
    if isinstance(error, (FileNotFoundError, ConnectionRefusedError)):
        return "the model server is not running"
    if isinstance(error, (TimeoutError, BlockingIOError, socket.timeout)):
        return "the model server does not answer (stopped or overloaded)"
    return f"cannot reach the model server ({type(error).__name__})"
