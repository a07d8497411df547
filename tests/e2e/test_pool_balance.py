"""Which replica choice keeps batches full: 8 clients, 2 replicas, each balance policy.

The model servers are the fake NumPy model with a fixed 30 ms per model call whatever the
batch size (at most 8), so spreading requests thinner makes more, smaller calls and costs
throughput: the case the choice must get right. One replica is the baseline. Real Gunicorn
(2 workers x 4 threads). Figures go to tests/artifacts/pool.json ("balance").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests

from onemodel.boundary.client import ModelClient
from onemodel.settings import parse_address
from tests.support.load import Load, percentile
from tests.support.processes import Service, free_port, new_authkey
from tests.support.web import record_figures, start_fake_model_server, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 8
REQUESTS = 400
CALL_S = "0.03"
_results: dict[str, Any] = {}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    directory = tmp_path_factory.mktemp("balance")
    authkey = new_authkey()
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    started: list[Service] = []
    try:
        for index, address in enumerate(addresses):
            started.append(
                start_fake_model_server(
                    address, authkey, directory / f"fake-{index}.log", "--delay-s", CALL_S
                )
            )
        yield authkey, addresses
    finally:
        for service in started:
            service.stop()


def _calls(authkey: str, address: str) -> list[int]:
    client = ModelClient(parse_address(address), authkey.encode())
    try:
        return list(client.info().extra["model_calls"])
    finally:
        client.close()


@pytest.mark.parametrize(
    ("policy", "replicas"),
    [("p2c", 1), ("p2c", 2), ("round_robin", 2), ("fill", 2)],
    ids=["one-replica", "p2c", "round_robin", "fill"],
)
def test_balance_policy_batches(
    servers: tuple[str, list[str]], tmp_path: Path, policy: str, replicas: int
) -> None:
    authkey, all_addresses = servers
    addresses = all_addresses[:replicas]
    web = start_web(
        tmp_path,
        {
            "MODEL_SERVER_ADDRESS": ",".join(addresses),
            "MODEL_SERVER_AUTHKEY": authkey,
            "MODEL_SERVER_BALANCE": policy,
        },
        workers=2,
        threads=4,
    )
    ok, encoded = cv2.imencode(".jpg", np.full((48, 64, 3), 100, dtype=np.uint8))
    assert ok
    data = encoded.tobytes()

    def send(session: requests.Session) -> requests.Response:
        return session.post(
            web.url("/predict"), files={"file": ("x.jpg", data, "image/jpeg")}, timeout=30
        )

    try:
        before = {address: len(_calls(authkey, address)) for address in addresses}
        with Load(send, clients=CLIENTS, max_duration_s=60, max_requests=REQUESTS) as load:
            load.wait_for(lambda outcomes: len(outcomes) >= REQUESTS, 65)
        outcomes = load.stop()
        calls = {address: _calls(authkey, address)[before[address] :] for address in addresses}
    finally:
        web.stop()
    images = [sum(made) for made in calls.values()]
    batches = [size for made in calls.values() for size in made]
    elapsed = outcomes[-1].finished_s - outcomes[0].started_s
    figures = {
        "replicas": replicas,
        "requests": len(outcomes),
        "statuses": sorted({str(o.status) for o in outcomes}),
        "mean_batch_size": round(sum(batches) / len(batches), 2),
        "batches_of_1_share": round(sum(size == 1 for size in batches) / len(batches), 3),
        "images_per_replica": images,
        "spread_min_over_max": round(min(images) / max(*images, 1), 3),
        "throughput_rps": round(len(outcomes) / elapsed, 1),
        "p50_s": round(percentile([o.latency_s for o in outcomes], 0.5), 4),
        "p99_s": round(percentile([o.latency_s for o in outcomes], 0.99), 4),
    }
    _results[f"{policy}_x{replicas}"] = figures
    record_figures("pool", "balance", _results)
    assert figures["statuses"] == ["200"], figures
    assert sum(images) == len(outcomes), figures
