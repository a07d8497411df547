"""The pool across "hosts": model servers in their own network namespaces, one Gunicorn.

Each host is a network namespace the test creates, joined to the test's namespace by a veth
pair with private 10.213.<i>.0/24 addresses; no traffic leaves those links. A host is
partitioned by dropping every packet it receives (iptables inside its namespace) and killed
with SIGKILL. Needs root and iproute2 (and iptables for the partition); skipped otherwise.
Figures go to tests/artifacts/pool.json.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests

from tests.support.load import Load, Outcome, percentile
from tests.support.processes import PYTHON, ROOT, Service, base_env, new_authkey, wait_until
from tests.support.web import WebDeployment, record_figures, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAKE_MODEL_SERVER = ROOT / "tests" / "support" / "fake_model_server.py"
HOSTS = 2
CLIENTS = 8
REQUEST_TIMEOUT_S = 5.0
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 1.0
# A request waiting on a host that just went silent is abandoned once a probe fails (at most
# interval + timeout, then the next 0.2 s poll) and retried on another host.
PARTITION_BOUND_S = PROBE_INTERVAL_S + PROBE_TIMEOUT_S + 1.5


def _missing_tools() -> str:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"ip netns does not work here: {probe.stderr.decode(errors='replace').strip()}"
    return ""


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


@dataclass
class Host:
    """One namespace with a model server on 10.213.<index>.2:7000."""

    index: int
    namespace: str
    link: str
    service: Service | None = None

    @property
    def address(self) -> str:
        return f"10.213.{self.index}.2:7000"

    def create(self) -> None:
        peer = f"{self.link}n"
        _run("ip", "netns", "add", self.namespace)
        _run("ip", "link", "add", self.link, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", self.namespace)
        _run("ip", "addr", "add", f"10.213.{self.index}.1/24", "dev", self.link)
        _run("ip", "link", "set", self.link, "up")
        inside = ("ip", "netns", "exec", self.namespace)
        _run(*inside, "ip", "addr", "add", f"10.213.{self.index}.2/24", "dev", peer)
        _run(*inside, "ip", "link", "set", peer, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")

    def start_model_server(self, authkey: str, log_path: Path) -> None:
        log = log_path.open("ab")
        process = subprocess.Popen(
            # `ip netns exec` execs the command: the pid is the model server's own.
            [
                *("ip", "netns", "exec", self.namespace),
                *(PYTHON, str(FAKE_MODEL_SERVER), self.address, "--delay-s", "0.005"),
            ],
            cwd=ROOT,
            env=base_env(MODEL_SERVER_AUTHKEY=authkey),
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        process.stdout.close()
        self.service = Service(process, log_path, log)
        assert line.strip() == b"ready", self.service.log()[-2000:]

    def partition(self, on: bool) -> None:
        """Drop (or stop dropping) every packet this host receives."""
        action = "-A" if on else "-D"
        _run("ip", "netns", "exec", self.namespace, "iptables", action, "INPUT", "-j", "DROP")

    def destroy(self) -> None:
        if self.service is not None:
            self.service.stop(timeout_s=5)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.link], capture_output=True, check=False)


@dataclass
class Cluster:
    hosts: list[Host]
    web: WebDeployment


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = _missing_tools()
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("netns")
    tag = os.getpid() % 100_000
    hosts = [Host(i, f"onemodel-{tag}-{i}", f"om{tag}h{i}") for i in range(HOSTS)]
    authkey = new_authkey()
    web = None
    try:
        for host in hosts:
            host.create()
            host.start_model_server(authkey, directory / f"host-{host.index}.log")
        web = start_web(
            directory,
            {
                "MODEL_SERVER_ADDRESS": ",".join(host.address for host in hosts),
                "MODEL_SERVER_AUTHKEY": authkey,
                "REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
                "MODEL_SERVER_PROBE_INTERVAL_S": str(PROBE_INTERVAL_S),
                "MODEL_SERVER_PROBE_TIMEOUT_S": str(PROBE_TIMEOUT_S),
            },
            workers=2,
            threads=4,
        )
        yield Cluster(hosts, web)
    finally:
        if web is not None:
            web.stop()
        for host in hosts:
            host.destroy()
        leftover = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        ).stdout
        assert f"onemodel-{tag}-" not in leftover, leftover


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.full((48, 64, 3), 120, dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def _load(web: WebDeployment, data: bytes, max_requests: int, max_duration_s: float) -> Load:
    url = web.url("/predict")

    def send(session: requests.Session) -> requests.Response:
        return session.post(url, files={"file": ("x.jpg", data, "image/jpeg")}, timeout=30)

    return Load(send, clients=CLIENTS, max_duration_s=max_duration_s, max_requests=max_requests)


def _served(web: WebDeployment) -> dict[str, int]:
    response = requests.get(web.url("/readyz"), timeout=10)
    return {item["address"]: item["images_served"] for item in response.json()["replicas"]}


def _statuses(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = str(outcome.status or outcome.error)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _all_ready(cluster: Cluster) -> None:
    wait_until(
        lambda: all(item["ready"] for item in cluster.web.readyz()["replicas"]),
        30,
        "every host ready",
    )


def test_requests_spread_over_the_hosts(cluster: Cluster, jpeg: bytes) -> None:
    _all_ready(cluster)
    before = _served(cluster.web)
    with _load(cluster.web, jpeg, max_requests=400, max_duration_s=30) as load:
        load.wait_for(lambda outcomes: len(outcomes) >= 400, 35)
    outcomes = load.stop()
    after = _served(cluster.web)
    per_host = [after[host.address] - before[host.address] for host in cluster.hosts]
    figures: dict[str, Any] = {
        "requests": len(outcomes),
        "statuses": _statuses(outcomes),
        "images_per_host": per_host,
        "spread_min_over_max": round(min(per_host) / max(*per_host, 1), 3),
    }
    record_figures("pool", "netns_spread", figures)
    assert figures["statuses"] == {"200": len(outcomes)}, figures
    assert figures["spread_min_over_max"] >= 0.25, figures


def test_a_partitioned_host_costs_no_request_and_rejoins(cluster: Cluster, jpeg: bytes) -> None:
    _all_ready(cluster)
    victim = cluster.hosts[1]
    with _load(cluster.web, jpeg, max_requests=20_000, max_duration_s=60) as load:
        assert load.wait_for(lambda outcomes: len(outcomes) >= 80, 30)
        partitioned_at = time.monotonic()
        victim.partition(True)
        try:
            load.wait_for(lambda _: time.monotonic() > partitioned_at + 8.0, 10)
            during = _served(cluster.web)
        finally:
            victim.partition(False)
        healed_at = time.monotonic()
        wait_until(
            lambda: _served(cluster.web)[victim.address] > during[victim.address],
            15,
            "the healed host serving again",
        )
        rejoined_at = time.monotonic()
    outcomes = load.stop()
    spanning = [o for o in outcomes if o.finished_s >= partitioned_at and o.started_s <= healed_at]
    figures = {
        "requests": len(outcomes),
        "statuses": _statuses(outcomes),
        "requests_during_partition": len(spanning),
        "max_latency_during_partition_s": round(max(o.latency_s for o in spanning), 3),
        "p50_during_partition_s": round(percentile([o.latency_s for o in spanning], 0.5), 4),
        "bound_s": PARTITION_BOUND_S,
        "heal_to_serving_s": round(rejoined_at - healed_at, 3),
    }
    record_figures("pool", "netns_partition", figures)
    assert figures["statuses"] == {"200": len(outcomes)}, figures
    assert figures["max_latency_during_partition_s"] < PARTITION_BOUND_S, figures


def test_a_killed_host_costs_no_request(cluster: Cluster, jpeg: bytes) -> None:
    _all_ready(cluster)
    victim = cluster.hosts[0]
    assert victim.service is not None
    with _load(cluster.web, jpeg, max_requests=20_000, max_duration_s=30) as load:
        assert load.wait_for(lambda outcomes: len(outcomes) >= 80, 30)
        killed_at = time.monotonic()
        victim.service.signal(signal.SIGKILL)
        assert load.wait_for(
            lambda outcomes: sum(o.started_s > killed_at + 1.0 for o in outcomes) >= 200, 30
        )
    outcomes = load.stop()
    spanning = [o for o in outcomes if o.finished_s >= killed_at and o.started_s <= killed_at + 1]
    figures = {
        "requests": len(outcomes),
        "statuses": _statuses(outcomes),
        "max_latency_around_kill_s": round(max(o.latency_s for o in spanning), 3),
    }
    record_figures("pool", "netns_host_killed", figures)
    assert figures["statuses"] == {"200": len(outcomes)}, figures
    replicas = {item["address"]: item for item in cluster.web.readyz()["replicas"]}
    assert replicas[victim.address]["ready"] is False
