"""ModelPool: many model servers behind one worker, chosen per request, with failover.

A web worker holds one pool. Every prediction goes to one replica, chosen by the power of
two random choices on the requests this worker has outstanding there; a replica that dies,
stops, refuses or cannot be reached is marked unavailable and the prediction is retried on
another (predictions have no side effects), within the request's own time budget. A prober
thread per replica asks for ``info`` periodically, with backoff while it fails, and makes a
replica that answers ready again available. ``dns:host:port`` entries are re-resolved
periodically, so replicas behind a headless Service join and leave without a restart.

Nothing starts at construction: the threads start on first use, in the worker process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from onemodel.boundary.client import ModelClient
from onemodel.boundary.contract import ModelInfo
from onemodel.errors import (
    ConfigError,
    InferenceTimeoutError,
    ModelChangedError,
    ModelServerStoppingError,
    ModelUnavailableError,
    OneModelError,
    OverloadedError,
)
from onemodel.settings import BALANCE_POLICIES, Address, Settings

logger = logging.getLogger(__name__)

# Metric labels name a replica by its slot (smallest free index), never by its address, so
# replicas coming and going behind DNS cannot grow the label set beyond this.
MAX_SLOT_LABELS = 32
# While a replica is down its prober asks again after 0.05 s, doubling to 0.25 s. Requests
# skip a replica a probe found down, so this delay is how long a restarted replica stays
# unused after it is ready: with a 1 s cap it was up to 1 s (0.5 s on average) of a ~3 s
# kill -9 recovery. A probe of a down replica is one refused connect: cheap even at 4 a
# second per worker.
_PROBE_BACKOFF_INITIAL_S = 0.05
_PROBE_BACKOFF_MAX_S = 0.25
# How a request picks among available replicas (MODEL_SERVER_BALANCE):
#   p2c          the one with fewer requests outstanding of two picked at random
#   round_robin  each in turn
#   fill         the busiest one still below its batch limit (packs batches), else the least
#                busy
# States in which a probe (or the replica itself) said it cannot answer: not even tried.
_DOWN_STATES = frozenset({"unreachable", "loading", "failed", "stopping"})


class ReplicaClient(Protocol):
    """What the pool needs from one replica's client (a ModelClient, or a fake in tests)."""

    def predict(
        self,
        images: np.ndarray,
        timeout_s: float,
        version: str | None = None,
        abandon: Callable[[], bool] | None = None,
    ) -> np.ndarray: ...

    def info(self) -> ModelInfo: ...

    def metrics_text(self) -> bytes: ...

    def spec(self) -> ModelInfo: ...

    def close(self) -> None: ...


# (address, info_timeout_s, on_reconnect) -> a client for that one replica.
ClientFactory = Callable[[Address, float, Callable[[], None] | None], ReplicaClient]
Resolver = Callable[[str, int], list[str]]
AttemptHook = Callable[[str, str], None]


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica as /readyz lists it."""

    address: str
    ready: bool
    state: str
    images_served: int
    outstanding: int
    replica: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "ready": self.ready,
            "state": self.state,
            "images_served": self.images_served,
            "outstanding": self.outstanding,
            "replica": self.replica,
        }


class _Replica:
    """One model server as this worker sees it; its mutable fields are guarded by the pool."""

    def __init__(self, address: Address, slot: int, client: ReplicaClient, probe: ReplicaClient):
        self.address = address
        self.slot = slot
        self.client = client
        self.probe_client = probe
        self.outstanding = 0
        self.available = True  # until a request or a probe says otherwise
        self.probed = False
        self.state = "unknown"
        self.reason = ""
        self.info: ModelInfo | None = None
        self.lost = 0  # bumped when a probe finds it unreachable: waiting requests abandon
        self.failed_at = float("-inf")
        self.removed = threading.Event()

    @property
    def label(self) -> str:
        return str(self.slot) if self.slot < MAX_SLOT_LABELS else "other"

    @property
    def ready(self) -> bool:
        return self.available and self.state == "ready"


class ModelPool:
    """A worker's handle on every model-server replica; satisfies the Predictor protocol."""

    def __init__(
        self,
        targets: Sequence[Address],
        authkey: bytes,
        *,
        resolve_interval_s: float = 5.0,
        probe_interval_s: float = 1.0,
        probe_timeout_s: float = 2.0,
        client_factory: ClientFactory | None = None,
        resolver: Resolver | None = None,
        on_attempt: AttemptHook | None = None,
        on_reconnect: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        balance: str = "p2c",
    ) -> None:
        if not targets:
            raise ValueError("a model pool needs at least one address")
        if balance not in BALANCE_POLICIES:
            raise ValueError(f"balance {balance!r} is not one of {', '.join(BALANCE_POLICIES)}")
        self._balance = balance
        self._turn = 0
        self._targets = tuple(targets)
        self._authkey = authkey
        self._resolve_interval_s = resolve_interval_s
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._on_reconnect = on_reconnect
        self._client_factory = client_factory or self._model_client
        self._resolver = resolver or _resolve_host
        self._on_attempt = on_attempt
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._replicas: dict[Address, _Replica] = {}
        self._resolved: dict[Address, list[Address]] = {}
        self._spec: ModelInfo | None = None
        self._started_pid: int | None = None
        self._closed = threading.Event()
        self._update_replicas(self._expand(initial=True))

    # --- the Predictor protocol --------------------------------------------------------

    def predict(
        self, images: np.ndarray, timeout_s: float, version: str | None = None
    ) -> np.ndarray:
        """Return class scores from one replica, failing over to others; raise if none can.

        With ``version``, a replica serving another version answers ModelChangedError: the
        caller prepares the images again for the model info it reads next (no failover).
        """
        self._start()
        deadline = time.monotonic() + timeout_s
        tried: set[Address] = set()
        last_error: OneModelError | None = None
        while (replica := self._choose(tried)) is not None:
            tried.add(replica.address)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InferenceTimeoutError(f"the prediction did not finish within {timeout_s:g} s")
            with self._lock:
                replica.outstanding += 1
                lost = replica.lost
                # Giving up on a replica that stopped answering only helps if another exists.
                alone = len(self._replicas) == 1
            try:
                scores = replica.client.predict(
                    images,
                    remaining,
                    version=version,
                    abandon=None if alone else _lost_since(replica, lost),
                )
            except ModelChangedError:
                # The replica is healthy, on another version: read the model info again.
                self._spec = None
                self._count(replica, "ok")
                raise
            except ModelUnavailableError as error:
                # Dead, stopping, refused or unreachable: another replica may answer.
                self._mark_failed(replica, error)
                self._count(replica, "failover")
                last_error = error
                continue
            except OverloadedError as error:
                # Its queue is full this moment: try another, but keep it in the pool.
                self._count(replica, "failover")
                last_error = error
                continue
            except OneModelError:
                self._count(replica, "error")
                raise
            finally:
                with self._lock:
                    replica.outstanding -= 1
            self._mark_answered(replica)
            self._count(replica, "ok")
            return scores
        raise last_error or self._down_error()

    def spec(self) -> ModelInfo:
        """Return the model's name, input size and labels (from the first replica to answer)."""
        self._start()
        cached = self._spec
        if cached is not None:
            return cached
        tried: set[Address] = set()
        last_error: OneModelError | None = None
        while (replica := self._choose(tried)) is not None:
            tried.add(replica.address)
            try:
                spec = replica.client.spec()
            except ModelUnavailableError as error:
                self._mark_failed(replica, error)
                last_error = error
                continue
            self._spec = spec
            return spec
        raise last_error or self._down_error()

    def info(self) -> ModelInfo:
        """Return a ready replica's info, every replica in ``extra["replicas"]``.

        The pool is ready while at least one replica is.
        """
        self._start()
        replicas = self._snapshot()
        for replica in replicas:
            if replica.available or not replica.probed:
                # Asked now, not from the last probe: a replica that hung a moment ago
                # must not be reported ready. Known-down ones keep their prober's answer.
                self._probe(replica)
        listed = [self._status(replica).as_dict() for replica in replicas]
        ready = [r.info for r in replicas if r.ready and r.info is not None]
        if not ready:
            states = {replica.state for replica in replicas}
            state = next((s for s in ("loading", "stopping") if s in states), "failed")
            reasons = sorted({replica.reason for replica in replicas} - {""})
            reason = "; ".join(reasons) or "no model server replica is ready"
            return ModelInfo(state=state, reason=reason, extra={"replicas": listed})
        served = sum(r.info.images_served for r in replicas if r.info is not None)
        return dataclasses.replace(
            ready[0],
            images_served=served,
            extra={**ready[0].extra, "replicas": listed, "replicas_ready": len(ready)},
        )

    def metrics_text(self) -> bytes:
        """Return every reachable replica's exposition, each sample labelled by its replica."""
        self._start()
        texts: list[tuple[str, bytes]] = []
        for replica in self._snapshot():
            if not replica.available:
                continue
            try:
                texts.append((replica.label, replica.client.metrics_text()))
            except ModelUnavailableError as error:
                self._mark_failed(replica, error)
            except OneModelError:
                continue
        if not texts:
            raise ModelUnavailableError("no model server replica answered")
        return label_exposition(texts)

    def replica_statuses(self) -> list[ReplicaStatus]:
        """Return how this worker sees each replica now."""
        return [self._status(replica) for replica in self._snapshot()]

    def close(self) -> None:
        """Stop the threads and drop every connection."""
        self._closed.set()
        for replica in self._snapshot():
            replica.removed.set()
            replica.client.close()
            replica.probe_client.close()

    # --- choice and health -------------------------------------------------------------

    def _choose(self, tried: set[Address]) -> _Replica | None:
        """Pick the less busy of two random available replicas not yet tried."""
        with self._lock:
            untried = [r for r in self._replicas.values() if r.address not in tried]
            available = [r for r in untried if r.available and r.state not in _DOWN_STATES]
            if not available:
                # Nothing known good: try those only a request saw fail (it may have been
                # one bad moment), the longest-failed first; never those a probe or the
                # replica itself declared down: that answer is known, and fast.
                suspects = [r for r in untried if r.state not in _DOWN_STATES]
                return min(suspects, key=lambda r: r.failed_at, default=None)
            if len(available) == 1:
                return available[0]
            if self._balance == "round_robin":
                self._turn += 1
                return sorted(available, key=lambda r: r.slot)[self._turn % len(available)]
            if self._balance == "fill":
                filling = [r for r in available if r.outstanding < _batch_limit(r)]
                if filling:
                    busiest = max(r.outstanding for r in filling)
                    return self._rng.choice([r for r in filling if r.outstanding == busiest])
                return min(available, key=lambda r: r.outstanding)
            first, second = self._rng.sample(available, 2)
            return first if first.outstanding <= second.outstanding else second

    def _down_error(self) -> ModelUnavailableError:
        """Return the error for a request no replica can take, with their reasons."""
        with self._lock:
            replicas = list(self._replicas.values())
        if replicas and all(replica.state == "stopping" for replica in replicas):
            return ModelServerStoppingError()
        reasons = sorted({replica.reason for replica in replicas} - {""})
        return ModelUnavailableError("; ".join(reasons) or "no model server is available")

    def _mark_failed(self, replica: _Replica, error: OneModelError) -> None:
        with self._lock:
            replica.available = False
            replica.failed_at = time.monotonic()
            replica.reason = error.message
            if isinstance(error, ModelServerStoppingError):
                replica.state = "stopping"
        logger.info(
            "model server replica %s (%s) failed a request: %s",
            replica.label,
            replica.address,
            error.message,
        )

    def _mark_answered(self, replica: _Replica) -> None:
        if not replica.available:
            with self._lock:
                replica.available = True

    def _count(self, replica: _Replica, outcome: str) -> None:
        if self._on_attempt is not None:
            self._on_attempt(replica.label, outcome)

    def _probe(self, replica: _Replica) -> bool:
        """Ask one replica for its info; update its health; return whether it is ready."""
        try:
            info = replica.probe_client.info()
        except OneModelError as error:
            with self._lock:
                was_available = replica.available
                replica.available = False
                replica.probed = True
                replica.failed_at = time.monotonic()
                replica.state = "unreachable"
                replica.reason = error.message
                # Requests waiting on it now would wait out their whole timeout.
                replica.lost += 1
            if was_available:
                logger.warning(
                    "model server replica %s (%s) does not answer: %s",
                    replica.label,
                    replica.address,
                    error.message,
                )
            return False
        with self._lock:
            was_available = replica.available
            replica.probed = True
            replica.info = info
            replica.state = info.state
            replica.reason = info.reason
            replica.available = info.ready
            if not info.ready:
                replica.failed_at = time.monotonic()
        if info.ready and not was_available:
            logger.info("model server replica %s (%s) is ready", replica.label, replica.address)
        spec = self._spec
        if info.ready and spec is not None and _model_of(info) != _model_of(spec):
            self._spec = None  # a replica now serves another model: ask again
        return info.ready

    def _probe_loop(self, replica: _Replica) -> None:
        backoff = _PROBE_BACKOFF_INITIAL_S
        while not replica.removed.is_set() and not self._closed.is_set():
            if self._probe(replica):
                backoff = _PROBE_BACKOFF_INITIAL_S
                wait_s = self._probe_interval_s
            else:
                wait_s = backoff
                backoff = min(backoff * 2, _PROBE_BACKOFF_MAX_S)
            replica.removed.wait(wait_s)

    # --- membership --------------------------------------------------------------------

    def _start(self) -> None:
        """Start the prober (and resolver) threads once per process, on first use."""
        pid = os.getpid()
        if self._started_pid == pid:
            return
        with self._lock:
            if self._started_pid == pid:
                return
            self._started_pid = pid
            replicas = list(self._replicas.values())
        for replica in replicas:
            self._start_prober(replica)
        if any(target.dns for target in self._targets):
            threading.Thread(target=self._resolve_loop, name="pool-resolver", daemon=True).start()

    def _start_prober(self, replica: _Replica) -> None:
        threading.Thread(
            target=self._probe_loop,
            args=(replica,),
            name=f"pool-probe-{replica.label}",
            daemon=True,
        ).start()

    def _resolve_loop(self) -> None:
        while not self._closed.wait(self._resolve_interval_s):
            added = self._update_replicas(self._expand(initial=False))
            for replica in added:
                self._start_prober(replica)

    def _expand(self, initial: bool) -> list[Address]:
        """Return the addresses of every target now (DNS names resolved)."""
        addresses: list[Address] = []
        for target in self._targets:
            if not target.dns:
                addresses.append(target)
                continue
            port = int(target.port or 0)
            try:
                hosts = self._resolver(str(target.host), port)
            except OSError as error:
                # A failed lookup (DNS down, name gone for a moment) keeps what we know.
                logger.warning("cannot resolve %s (%s); keeping its known replicas", target, error)
                addresses.extend(self._resolved.get(target, []))
                continue
            found = [Address(host=host, port=port) for host in hosts]
            if not found and initial:
                logger.warning("%s resolves to no address yet", target)
            self._resolved[target] = found
            addresses.extend(found)
        return list(dict.fromkeys(addresses))

    def _update_replicas(self, addresses: list[Address]) -> list[_Replica]:
        """Add replicas for new addresses and remove gone ones; return the added ones."""
        added: list[_Replica] = []
        removed: list[_Replica] = []
        with self._lock:
            wanted = set(addresses)
            for address in list(self._replicas):
                if address not in wanted:
                    removed.append(self._replicas.pop(address))
            for address in addresses:
                if address in self._replicas:
                    continue
                used = {replica.slot for replica in self._replicas.values()}
                slot = next(index for index in range(len(used) + 1) if index not in used)
                replica = _Replica(
                    address,
                    slot,
                    self._client_factory(address, self._probe_timeout_s * 2, self._on_reconnect),
                    self._client_factory(address, self._probe_timeout_s, None),
                )
                self._replicas[address] = replica
                added.append(replica)
        for replica in removed:
            logger.info("model server replica %s (%s) left", replica.label, replica.address)
            replica.removed.set()
            replica.probe_client.close()
        for replica in added:
            logger.info("model server replica %s at %s", replica.label, replica.address)
        return added

    def _snapshot(self) -> list[_Replica]:
        with self._lock:
            return sorted(self._replicas.values(), key=lambda replica: replica.slot)

    def _status(self, replica: _Replica) -> ReplicaStatus:
        with self._lock:
            return ReplicaStatus(
                address=str(replica.address),
                ready=replica.ready,
                state=replica.state,
                images_served=replica.info.images_served if replica.info else 0,
                outstanding=replica.outstanding,
                replica=replica.label,
            )

    def _model_client(
        self, address: Address, info_timeout_s: float, on_reconnect: Callable[[], None] | None
    ) -> ReplicaClient:
        return ModelClient(
            address, self._authkey, info_timeout_s=info_timeout_s, on_reconnect=on_reconnect
        )


def _batch_limit(replica: _Replica) -> int:
    """Return the most images the replica batches at once (its MAX_BATCH_SIZE), 8 if unknown."""
    return replica.info.max_batch_size if replica.info and replica.info.max_batch_size else 8


def _lost_since(replica: _Replica, lost: int) -> Callable[[], bool]:
    """Return a check: has a probe found replica unreachable since it was at ``lost``?"""
    return lambda: replica.lost != lost


def _model_of(info: ModelInfo) -> tuple[str, str, tuple[int, int], tuple[str, ...]]:
    return (info.name, info.version, info.input_size, info.labels)


def _resolve_host(host: str, port: int) -> list[str]:
    """Return every address host resolves to (IPv4 first, then IPv6), in a stable order."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    hosts = [str(item[4][0]) for item in found if item[0] in (socket.AF_INET, socket.AF_INET6)]
    return sorted(set(hosts), key=lambda h: (":" in h, h))


def label_exposition(texts: Sequence[tuple[str, bytes]]) -> bytes:
    """Merge Prometheus expositions, adding ``replica="<label>"`` to every sample.

    The samples of one metric family stay together under one HELP and TYPE line, as the
    text format requires, whichever replica they came from.
    """
    families: dict[str, _Family] = {}
    for label, text in texts:
        family = families.setdefault("", _Family())
        for line in text.decode("utf-8", "replace").splitlines():
            parts = line.split(None, 3)
            if not parts:
                continue
            if parts[0] == "#":
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = families.setdefault(parts[2], _Family())
                    if parts[1] == "HELP":
                        family.help = family.help or line
                    else:
                        family.type = family.type or line
                continue
            family.samples.append(_add_label(line, label))
    lines: list[str] = []
    for family in families.values():
        lines.extend(line for line in (family.help, family.type) if line)
        lines.extend(family.samples)
    return ("\n".join(lines) + "\n").encode() if lines else b""


@dataclass
class _Family:
    help: str = ""
    type: str = ""
    samples: list[str] = field(default_factory=list)


def _add_label(sample: str, label: str) -> str:
    """Return a sample line with ``replica="<label>"`` as its first label."""
    brace, space = sample.find("{"), sample.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        name, rest = sample[:brace], sample[brace + 1 :]
        separator = "" if rest.startswith("}") else ","
        return f'{name}{{replica="{label}"{separator}{rest}'
    if space == -1:
        return sample
    return f'{sample[:space]}{{replica="{label}"}}{sample[space:]}'


def pool_from_settings(
    settings: Settings,
    on_attempt: AttemptHook | None = None,
    on_reconnect: Callable[[], None] | None = None,
) -> ModelPool:
    """Return the pool of every model server MODEL_SERVER_ADDRESS names (web and gRPC tiers)."""
    if not settings.model_server_pool:
        raise ConfigError(
            "MODEL_SERVER_ADDRESS is not set: run under gunicorn -c gunicorn.conf.py (which "
            "starts a private model server) or point it at running model servers"
        )
    # A pool even for one address: /readyz and /metrics look the same for one or many.
    return ModelPool(
        settings.model_server_pool,
        settings.require_authkey(),
        resolve_interval_s=settings.model_server_resolve_s,
        probe_interval_s=settings.model_server_probe_interval_s,
        probe_timeout_s=settings.model_server_probe_timeout_s,
        balance=settings.model_server_balance,
        on_attempt=on_attempt,
        on_reconnect=on_reconnect,
    )
