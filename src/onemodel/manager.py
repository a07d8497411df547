"""The BaseManager boundary: the shared model service, its server, and the client workers use.

Only bytes, NumPy arrays, builtins and onemodel errors cross this boundary.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import struct
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import AuthenticationError, connection, managers
from typing import Any

import numpy as np

from onemodel.batcher import Batcher
from onemodel.errors import (
    InferenceTimeoutError,
    InvalidRequestError,
    ModelUnavailableError,
    OneModelError,
    OverloadedError,
)
from onemodel.metrics import ServerMetrics
from onemodel.settings import Address

logger = logging.getLogger(__name__)

# Name under which our transport is registered in multiprocessing.managers.listener_client.
TRANSPORT = "onemodel"
HANDSHAKE_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 3.0
# Extra time the client waits beyond a prediction's own timeout, so the server's 504 wins.
REPLY_GRACE_S = 1.0
_EXPOSED = ("predict", "info", "labels", "metrics")


# --- transport -------------------------------------------------------------------------


def _set_socket_options(fd: int, nodelay: bool, timeout_s: float | None) -> None:
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


class _Listener(connection.Listener):
    """A multiprocessing Listener whose accepted TCP connections have TCP_NODELAY set.

    Accepted connections start with a receive timeout so that a client which never
    completes the handshake cannot hold a server thread forever; _Server lifts it after.
    """

    def accept(self) -> connection.Connection:
        conn = super().accept()
        _set_socket_options(conn.fileno(), nodelay=self._is_tcp(), timeout_s=HANDSHAKE_TIMEOUT_S)
        return conn

    def _is_tcp(self) -> bool:
        return isinstance(self.address, tuple)


def _client(
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
        _set_socket_options(conn.fileno(), nodelay=is_tcp, timeout_s=HANDSHAKE_TIMEOUT_S)
        if authkey is not None:
            connection.answer_challenge(conn, authkey)
            connection.deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise
    return conn


def _install_transport() -> None:
    """Register our Listener/Client pair with multiprocessing.managers (idempotent)."""
    managers.listener_client.setdefault(TRANSPORT, (_Listener, _client))  # type: ignore[attr-defined]


# --- server side -----------------------------------------------------------------------


class ModelService:
    """The ONE shared object: every client of the manager reaches this same instance."""

    def __init__(
        self,
        describe: Callable[[], dict[str, Any]] | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._metrics = metrics or ServerMetrics()
        self._started_at = time.monotonic()
        self._lock = threading.Lock()
        self._batcher: Batcher | None = None
        self._input_size: tuple[int, int] | None = None
        self._labels: list[str] = []
        self._details: dict[str, Any] = {}
        self._state = "loading"
        self._reason = "the model is loading"
        self._load_count = 0
        self._images_served = 0
        self._describe = describe
        # Lets clients check that they all reach this one object.
        self._instance = uuid.uuid4().hex

    def set_ready(
        self,
        batcher: Batcher,
        input_size: tuple[int, int],
        labels: list[str],
        details: dict[str, Any],
    ) -> None:
        """Start answering predictions with this batcher (call after warm-up)."""
        with self._lock:
            self._batcher = batcher
            self._input_size = input_size
            self._labels = list(labels)
            self._details = dict(details)
            self._load_count += 1
            self._metrics.model_loads.inc()
            self._metrics.set_queue_depth(lambda: batcher.queued_images)
            self._state = "ready"
            self._reason = ""

    def set_failed(self, reason: str) -> None:
        """Report that the model could not be loaded."""
        with self._lock:
            self._state = "failed"
            self._reason = reason

    def set_stopping(self) -> None:
        """Refuse new predictions while shutting down."""
        with self._lock:
            self._state = "stopping"
            self._reason = "the model server is shutting down"

    def predict(self, images: np.ndarray, timeout_s: float) -> np.ndarray:
        """Return class scores (N, classes) float32 for RGB uint8 images (N, H, W, 3)."""
        batcher = self._batcher
        if self._state != "ready" or batcher is None:
            raise ModelUnavailableError(self._reason or "the model is not ready")
        self._check_images(images)
        try:
            future = batcher.submit(images, timeout_s)
        except OverloadedError:
            self._metrics.refused.labels("overloaded").inc()
            raise
        try:
            scores = future.result(timeout=timeout_s)
        except (TimeoutError, InferenceTimeoutError):
            future.cancel()
            self._metrics.refused.labels("timeout").inc()
            raise InferenceTimeoutError(
                f"the prediction did not finish within {timeout_s:g} s"
            ) from None
        with self._lock:
            self._images_served += int(images.shape[0])
        return scores

    def info(self) -> dict[str, Any]:
        """Return readiness and model details (plain builtins only)."""
        with self._lock:
            details: dict[str, Any] = {
                "ready": self._state == "ready",
                "state": self._state,
                "reason": self._reason,
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self._started_at, 3),
                "load_count": self._load_count,
                "instance": self._instance,
                "images_served": self._images_served,
                **self._details,
            }
        if self._batcher is not None:
            details["queued_images"] = self._batcher.queued_images
        if self._describe is not None:
            details.update(self._describe())
        return details

    def labels(self) -> list[str]:
        """Return the class names, one per model output."""
        return list(self._labels)

    def metrics(self) -> bytes:
        """Return this server's Prometheus exposition text."""
        return self._metrics.render()

    def _check_images(self, images: Any) -> None:
        size = self._input_size
        if (
            not isinstance(images, np.ndarray)
            or images.dtype != np.uint8
            or images.ndim != 4
            or images.shape[0] < 1
            or size is None
            or images.shape[1:] != (size[0], size[1], 3)
        ):
            shape = getattr(images, "shape", None)
            dtype = getattr(images, "dtype", type(images).__name__)
            raise InvalidRequestError(
                f"expected uint8 images of shape (N, {size[0] if size else '?'}, "
                f"{size[1] if size else '?'}, 3); got {dtype} {shape}"
            )


class _Server(managers.Server):
    """The stdlib manager server, but refused handshakes are logged (never the key itself).

    The stdlib answers a client with a wrong authkey silently; operators need to see it.
    The rest mirrors ``managers.Server._handle_request``.
    """

    def _handle_request(self, conn: connection.Connection) -> None:
        try:
            connection.deliver_challenge(conn, self.authkey)  # type: ignore[attr-defined]
            connection.answer_challenge(conn, self.authkey)  # type: ignore[attr-defined]
        except AuthenticationError:
            logger.warning("refused a client: failed authkey handshake")
            return
        except (OSError, EOFError) as error:
            logger.warning("a client left during the handshake (%s)", type(error).__name__)
            return
        _set_socket_options(conn.fileno(), nodelay=isinstance(self.address, tuple), timeout_s=None)
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


def create_server(service: ModelService, address: Address, authkey: bytes) -> managers.Server:
    """Bind a manager server for the one service at address (not yet serving)."""
    _install_transport()

    class ServingManager(managers.BaseManager):
        """A manager class private to this server, so registration leaves no global state."""

    # A callable returning the one instance: registering the class would build a new model
    # object for every client.
    ServingManager.register(
        "model", callable=lambda: service, proxytype=ModelProxy, exposed=_EXPOSED
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


# --- client side -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to prepare inputs and read outputs."""

    name: str
    input_size: tuple[int, int]
    labels: list[str]


class ModelProxy(managers.BaseProxy):
    """Proxy to the shared service whose calls time out instead of hanging forever."""

    _exposed_ = _EXPOSED

    def call(self, method: str, args: tuple[Any, ...], timeout_s: float) -> Any:
        """Call a method on the shared service, waiting at most timeout_s for the reply."""
        # BaseProxy keeps one connection per thread in self._tls (stdlib internals, untyped).
        tls: Any = self._tls  # type: ignore[attr-defined]
        try:
            conn = tls.connection
        except AttributeError:
            self._connect()  # type: ignore[attr-defined]
            conn = tls.connection
        try:
            conn.send((self._id, method, args, {}))  # type: ignore[attr-defined]
            answered = conn.poll(timeout_s)
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
        self._spec: tuple[int, ModelSpec] | None = None
        self.reconnects = 0

    def predict(self, images: np.ndarray, timeout_s: float) -> np.ndarray:
        """Return class scores for RGB uint8 images (N, H, W, 3)."""
        result = self._call("predict", (images, timeout_s), timeout_s + REPLY_GRACE_S)
        return np.asarray(result)

    def info(self) -> dict[str, Any]:
        """Return the model server's readiness and model details."""
        return dict(self._call("info", (), self._info_timeout_s))

    def metrics_text(self) -> bytes:
        """Return the model server's Prometheus exposition text."""
        return bytes(self._call("metrics", (), self._info_timeout_s))

    def spec(self) -> ModelSpec:
        """Return the model's name, input size and labels (cached per connection)."""
        _, generation = self._connected_proxy()
        cached = self._spec
        if cached is not None and cached[0] == generation:
            return cached[1]
        info = self.info()
        if not info.get("ready"):
            raise ModelUnavailableError(str(info.get("reason") or "the model is not ready"))
        height, width = info["input_size"]
        spec = ModelSpec(
            name=str(info["model"]),
            input_size=(int(height), int(width)),
            labels=list(self._call("labels", (), self._info_timeout_s)),
        )
        self._spec = (generation, spec)
        return spec

    def close(self) -> None:
        """Drop the connection (the next call reconnects)."""
        with self._lock:
            self._proxy = None
            self._generation += 1

    def _call(self, method: str, args: tuple[Any, ...], timeout_s: float) -> Any:
        # Every exposed method is free of side effects, so a call that met a dead connection
        # is tried once more on a fresh one: a restarted model server loses no request.
        for attempt in (1, 2):
            proxy, generation = self._connected_proxy()
            try:
                return proxy.call(method, args, timeout_s)
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
        _install_transport()

        class ClientManager(managers.BaseManager):
            """A manager class private to this client."""

        ClientManager.register("model", proxytype=ModelProxy, exposed=_EXPOSED)
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


def _describe_connect_error(error: BaseException) -> str:
    if isinstance(error, AuthenticationError):
        return "the model server refused our authkey (MODEL_SERVER_AUTHKEY differs)"
    if isinstance(error, (FileNotFoundError, ConnectionRefusedError)):
        return "the model server is not running"
    if isinstance(error, (TimeoutError, BlockingIOError, socket.timeout)):
        return "the model server does not answer (stopped or overloaded)"
    return f"cannot reach the model server ({type(error).__name__})"
