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
from collections.abc import Iterator
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


def _batch_means(web: WebDeployment) -> dict[str, float]:
    """Mean images per model call of each replica, from the merged /metrics."""
    text = requests.get(web.url("/metrics"), timeout=10).text
    sums = dict(re.findall(r'^onemodel_batch_size_sum\{replica="(\d+)"\} (\S+)$', text, re.M))
    counts = dict(re.findall(r'^onemodel_batch_size_count\{replica="(\d+)"\} (\S+)$', text, re.M))
    return {
        replica: float(sums[replica]) / float(counts[replica])
        for replica in sums
        if float(counts.get(replica, 0)) > 0
    }


def _status_counts(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = str(outcome.status or outcome.error)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _wait_both_ready(pair: Pair, timeout_s: float = 30.0) -> None:
    wait_until(
        lambda: all(item["ready"] for item in pair.web.readyz()["replicas"]),
        timeout_s,
        "both replicas ready in /readyz",
    )


def test_load_spreads_over_both_replicas(pair: Pair, jpeg: bytes) -> None:
    _wait_both_ready(pair)
    before = _served(pair.web)
    load = Load(_poster(pair.web, jpeg), clients=CLIENTS, max_duration_s=20, max_requests=600)
    with load:
        load.wait_for(lambda outcomes: len(outcomes) >= 600, 25)
    outcomes = load.stop()
    after = _served(pair.web)
    per_replica = {address: after[address] - before.get(address, 0) for address in after}
    spread = min(per_replica.values()) / max(*per_replica.values(), 1)
    latencies = [o.latency_s for o in outcomes if o.status == 200]
    figures = {
        "clients": CLIENTS,
        "requests": len(outcomes),
        "statuses": _status_counts(outcomes),
        "images_per_replica": list(per_replica.values()),
        "spread_min_over_max": round(spread, 3),
        "mean_batch_size_per_replica": {k: round(v, 2) for k, v in _batch_means(pair.web).items()},
        "p50_s": round(percentile(latencies, 0.5), 4),
        "p99_s": round(percentile(latencies, 0.99), 4),
    }
    record_figures("pool", "spread_two_replicas", figures)
    assert figures["statuses"] == {"200": len(outcomes)}, figures
    assert spread >= 0.25, figures


def _under_load_fault(pair: Pair, jpeg: bytes, victim: Replica, signum: int) -> dict[str, Any]:
    """Hit victim with signum under load, restart it; return the figures (asserting all 200)."""
    _wait_both_ready(pair)
    load = Load(_poster(pair.web, jpeg), clients=CLIENTS, max_duration_s=120, max_requests=20_000)
    assert victim.service is not None
    with load:
        assert load.wait_for(lambda outcomes: len(outcomes) >= 80, 30)
        hit_at = time.monotonic()
        victim.service.signal(signum)
        exit_code = victim.service.process.wait(30)
        exited_at = time.monotonic()
        victim.service.stop()
        assert load.wait_for(
            lambda outcomes: sum(o.started_s > exited_at for o in outcomes) >= 80, 30
        )
        victim.start()
        restarted_at = time.monotonic()
        victim.wait_ready(pair.authkey)
        ready_at = time.monotonic()
        before = _served(pair.web)[victim.address]

        def serving() -> bool:
            return _served(pair.web)[victim.address] > before

        wait_until(serving, REJOIN_BOUND_S + 5, "the restarted replica serving", interval_s=0.1)
        serving_at = time.monotonic()
        load.wait_for(lambda _: time.monotonic() > serving_at + 1.0, 5)
    outcomes = load.stop()
    around = [o for o in outcomes if o.started_s <= exited_at + 0.5 and o.finished_s >= hit_at]
    figures = {
        "signal": signal.Signals(signum).name,
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


def test_kill_9_of_one_replica_loses_no_request(pair: Pair, jpeg: bytes) -> None:
    figures = _under_load_fault(pair, jpeg, pair.replicas[0], signal.SIGKILL)
    record_figures("pool", "kill_9_one_of_two", figures)
    assert figures["victim_exit_code"] == -signal.SIGKILL


def test_sigterm_of_one_replica_loses_no_request(pair: Pair, jpeg: bytes) -> None:
    figures = _under_load_fault(pair, jpeg, pair.replicas[1], signal.SIGTERM)
    record_figures("pool", "sigterm_one_of_two", figures)
    assert figures["victim_exit_code"] == 0
    assert "every accepted prediction was answered" in pair.replicas[1].log_path.read_text()
