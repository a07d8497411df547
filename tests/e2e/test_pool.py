"""The model tier as a pool: two real model servers (tiny model) behind one real Gunicorn.

8 client threads on 127.0.0.1; every load is bounded in time and count. One replica is
killed (SIGKILL) or stopped (SIGTERM) under load: every request must still be answered 200,
and the replica started again is used again by the same Gunicorn. Figures are printed and
merged into tests/artifacts/pool.json.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests

from onemodel.boundary.client import ModelClient
from onemodel.settings import parse_address
from tests.support.load import Load, Outcome, Send, percentile
from tests.support.processes import (
    Service,
    base_env,
    free_port,
    new_authkey,
    start_model_server,
    wait_until,
)
from tests.support.web import WebDeployment, record_figures, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 8
REQUEST_TIMEOUT_S = 5.0
# Seconds from a replica being ready again to the same Gunicorn sending it predictions.
REJOIN_BOUND_S = 10.0


@dataclass
class Replica:
    """One external model server: its address and (current) process."""

    address: str
    log_path: Path
    env: dict[str, str]
    service: Service | None = None

    def start(self) -> None:
        self.service = start_model_server(self.env, self.log_path)

    def wait_ready(self, authkey: str, timeout_s: float = 180.0) -> dict[str, Any]:
        client = ModelClient(parse_address(self.address), authkey.encode())

        def ready() -> dict[str, Any] | None:
            assert self.service is not None and self.service.process.poll() is None, (
                f"model server {self.address} exited:\n{self.log_path.read_text()[-2000:]}"
            )
            info = client.info()
            return info.public() if info.ready else None

        try:
            return wait_until(ready, timeout_s, f"model server {self.address}", interval_s=0.2)
        finally:
            client.close()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


@dataclass
class Pair:
    replicas: list[Replica]
    web: WebDeployment
    authkey: str


@pytest.fixture(scope="module")
def pair(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    directory = tmp_path_factory.mktemp("pool")
    authkey = new_authkey()
    replicas = []
    for index in range(2):
        address = f"127.0.0.1:{free_port()}"
        env = base_env(
            MODEL_PATH=str(tiny_model),
            MODEL_SERVER_ADDRESS=address,
            MODEL_SERVER_AUTHKEY=authkey,
            MAX_BATCH_SIZE="16",
        )
        replicas.append(Replica(address, directory / f"model-server-{index}.log", env))
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready(authkey)
        web = start_web(
            directory,
            {
                "MODEL_SERVER_ADDRESS": ",".join(replica.address for replica in replicas),
                "MODEL_SERVER_AUTHKEY": authkey,
                "REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
            },
            workers=2,
            threads=4,
        )
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    yield Pair(replicas, web, authkey)
    web.stop()
    for replica in replicas:
        replica.stop()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    rng = np.random.default_rng(3)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def _poster(web: WebDeployment, data: bytes) -> Send:
    url = web.url("/predict")

    def send(session: requests.Session) -> requests.Response:
        return session.post(url, files={"file": ("x.jpg", data, "image/jpeg")}, timeout=30)

    return send


def _served(web: WebDeployment) -> dict[str, int]:
    """Images served by each replica address, as /readyz lists them."""
    replicas = web.readyz()["replicas"]
    return {item["address"]: int(item["images_served"]) for item in replicas}


def _batch_totals(web: WebDeployment) -> dict[str, tuple[float, float]]:
    """(images, model calls) so far of each replica, from the merged /metrics."""
    text = requests.get(web.url("/metrics"), timeout=10).text
    sums = dict(re.findall(r'^onemodel_batch_size_sum\{replica="(\d+)"\} (\S+)$', text, re.M))
    counts = dict(re.findall(r'^onemodel_batch_size_count\{replica="(\d+)"\} (\S+)$', text, re.M))
    return {replica: (float(sums[replica]), float(counts.get(replica, 0))) for replica in sums}


def _status_counts(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = str(outcome.status or outcome.error)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _wait_both_ready(web: WebDeployment, timeout_s: float = 180.0) -> None:
    wait_until(
        lambda: all(item["ready"] for item in web.readyz()["replicas"]),
        timeout_s,
        "both replicas ready in /readyz",
    )


def _spread(web: WebDeployment, jpeg: bytes, requests_count: int = 600) -> dict[str, Any]:
    """Run a bounded load of CLIENTS clients; return spread, batch sizes and latencies."""
    _wait_both_ready(web)
    before = _served(web)
    batches_before = _batch_totals(web)
    load = Load(_poster(web, jpeg), clients=CLIENTS, max_duration_s=30, max_requests=requests_count)
    with load:
        load.wait_for(lambda outcomes: len(outcomes) >= requests_count, 35)
    outcomes = load.stop()
    after = _served(web)
    batches_after = _batch_totals(web)
    per_replica = {address: after[address] - before.get(address, 0) for address in after}
    spread = min(per_replica.values()) / max(*per_replica.values(), 1)
    latencies = [o.latency_s for o in outcomes if o.status == 200]
    mean_batch = {}
    for replica, (images, calls) in batches_after.items():
        images_before, calls_before = batches_before.get(replica, (0.0, 0.0))
        if calls > calls_before:
            mean_batch[replica] = round((images - images_before) / (calls - calls_before), 2)
    figures = {
        "clients": CLIENTS,
        "requests": len(outcomes),
        "statuses": _status_counts(outcomes),
        "images_per_replica": per_replica,
        "spread_min_over_max": round(spread, 3),
        "mean_batch_size_per_replica": mean_batch,
        "p50_s": round(percentile(latencies, 0.5), 4),
        "p99_s": round(percentile(latencies, 0.99), 4),
        "throughput_rps": round(
            len(outcomes) / max(outcomes[-1].finished_s - outcomes[0].started_s, 1e-9), 1
        ),
    }
    assert figures["statuses"] == {"200": len(outcomes)}, figures
    return figures


def test_load_spreads_over_both_replicas(pair: Pair, jpeg: bytes) -> None:
    figures = _spread(pair.web, jpeg)
    record_figures("pool", "external_spread_two_replicas", figures)
    assert figures["spread_min_over_max"] >= 0.25, figures


def _under_load_fault(
    web: WebDeployment,
    jpeg: bytes,
    address: str,
    hit: Callable[[], int],
    restart: Callable[[], None],
) -> dict[str, Any]:
    """Under load, hit() the replica at address (it returns the exit code), restart() it.

    Returns the figures; asserts every request was answered 200 and that the same Gunicorn
    sends the restarted replica predictions within REJOIN_BOUND_S of it being ready.
    """
    _wait_both_ready(web)
    load = Load(_poster(web, jpeg), clients=CLIENTS, max_duration_s=240, max_requests=40_000)
    with load:
        assert load.wait_for(lambda outcomes: len(outcomes) >= 80, 30)
        hit_at = time.monotonic()
        exit_code = hit()
        exited_at = time.monotonic()
        assert load.wait_for(
            lambda outcomes: sum(o.started_s > exited_at for o in outcomes) >= 80, 30
        )
        restart()
        restarted_at = time.monotonic()

        def ready() -> bool:
            replicas = {item["address"]: item for item in web.readyz()["replicas"]}
            return bool(replicas[address]["ready"])

        wait_until(ready, 180, f"{address} ready again in /readyz", interval_s=0.1)
        ready_at = time.monotonic()
        before = _served(web)[address]
        wait_until(
            lambda: _served(web)[address] > before,
            REJOIN_BOUND_S + 5,
            "the restarted replica serving",
            interval_s=0.1,
        )
        serving_at = time.monotonic()
        load.wait_for(lambda _: time.monotonic() > serving_at + 1.0, 5)
    outcomes = load.stop()
    around = [o for o in outcomes if o.started_s <= exited_at + 0.5 and o.finished_s >= hit_at]
    figures = {
        "requests": len(outcomes),
        "statuses": _status_counts(outcomes),
        "victim_exit_code": exit_code,
        "signal_to_exit_s": round(exited_at - hit_at, 3),
        "max_latency_around_fault_s": round(max((o.latency_s for o in around), default=0.0), 3),
        "p50_s": round(percentile([o.latency_s for o in outcomes], 0.5), 4),
        "max_latency_s": round(max(o.latency_s for o in outcomes), 3),
        "restart_to_ready_s": round(ready_at - restarted_at, 3),
        "ready_to_serving_s": round(serving_at - ready_at, 3),
    }
    assert figures["statuses"] == {"200": len(outcomes)}, figures
    assert figures["ready_to_serving_s"] < REJOIN_BOUND_S, figures
    return figures


def _external_hit(victim: Replica, signum: int) -> Callable[[], int]:
    def hit() -> int:
        assert victim.service is not None
        victim.service.signal(signum)
        code = victim.service.process.wait(30)
        victim.service.stop()
        return code

    return hit


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_one_external_replica_killed_or_stopped_loses_no_request(
    pair: Pair, jpeg: bytes, signum: int
) -> None:
    victim = pair.replicas[0 if signum == signal.SIGKILL else 1]
    figures = _under_load_fault(
        pair.web, jpeg, victim.address, _external_hit(victim, signum), victim.start
    )
    name = signal.Signals(signum).name
    record_figures("pool", f"external_{name.lower()}_one_of_two", {"signal": name, **figures})
    if signum == signal.SIGTERM:
        assert figures["victim_exit_code"] == 0, figures
        assert "every accepted prediction was answered" in victim.log_path.read_text()
    else:
        assert figures["victim_exit_code"] == -signal.SIGKILL, figures


@pytest.fixture(scope="module")
def embedded_pair(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebDeployment]:
    """MODEL_SERVER_REPLICAS=2: the Gunicorn master starts and supervises both."""
    web = start_web(
        tmp_path_factory.mktemp("embedded-pool"),
        {
            "MODEL_PATH": str(tiny_model),
            "MODEL_SERVER_REPLICAS": "2",
            "REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        },
        workers=2,
        threads=4,
        timeout_s=300,
    )
    yield web
    web.stop()


def test_embedded_master_starts_two_replicas_and_spreads_the_load(
    embedded_pair: WebDeployment, jpeg: bytes
) -> None:
    servers = embedded_pair.model_servers()
    assert len(servers) == 2, servers
    assert all(process.ppid() == embedded_pair.gunicorn.pid for process in servers.values())
    figures = _spread(embedded_pair, jpeg)
    record_figures("pool", "embedded_spread_two_replicas", figures)
    assert set(figures["images_per_replica"]) == set(servers), figures
    assert figures["spread_min_over_max"] >= 0.25, figures


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_embedded_replica_killed_or_stopped_is_restarted_by_the_same_master(
    embedded_pair: WebDeployment, jpeg: bytes, signum: int
) -> None:
    workers = embedded_pair.worker_pids()
    address, victim = sorted(embedded_pair.model_servers().items())[0]

    def hit() -> int:
        victim.send_signal(signum)
        wait_until(lambda: not victim.is_running(), 30, "the replica gone")
        return -signum if signum == signal.SIGKILL else 0

    figures = _under_load_fault(embedded_pair, jpeg, address, hit, lambda: None)
    name = signal.Signals(signum).name
    record_figures("pool", f"embedded_{name.lower()}_one_of_two", {"signal": name, **figures})
    # The same master restarted it; no worker restarted.
    new = embedded_pair.model_servers()[address]
    assert new.pid != victim.pid and new.ppid() == embedded_pair.gunicorn.pid
    assert embedded_pair.worker_pids() == workers
