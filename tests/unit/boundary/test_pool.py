"""ModelPool against fake replicas: choice, failover, health, membership, metrics labels."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from onemodel.boundary.contract import ModelInfo
from onemodel.boundary.pool import ModelPool, label_exposition
from onemodel.errors import (
    InvalidRequestError,
    ModelChangedError,
    ModelServerStoppingError,
    ModelUnavailableError,
    OverloadedError,
)
from onemodel.settings import Address, parse_address
from tests.support.processes import wait_until

IMAGES = np.zeros((1, 8, 8, 3), dtype=np.uint8)


class FakeReplica:
    """One fake model server: answers with its own index; errors and hangs on demand."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.error: Exception | None = None
        self.info_error: Exception | None = None
        self.state = "ready"
        self.hang: threading.Event | None = None  # predict waits until set (or abandoned)
        self.predictions = 0
        self.abandoned = 0
        self.lock = threading.Lock()

    def predict(
        self,
        images: np.ndarray,
        timeout_s: float,
        version: str | None = None,
        abandon: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        if self.error is not None:
            raise self.error
        hang = self.hang
        if hang is not None:
            deadline = time.monotonic() + timeout_s
            while not hang.wait(0.01):
                if abandon is not None and abandon():
                    with self.lock:
                        self.abandoned += 1
                    raise ModelUnavailableError("abandoned")
                if time.monotonic() > deadline:
                    raise AssertionError("a hung prediction was never abandoned")
        with self.lock:
            self.predictions += 1
        return np.full((images.shape[0], 3), float(self.index), dtype=np.float32)

    def info(self) -> ModelInfo:
        if self.info_error is not None:
            raise self.info_error
        return ModelInfo(
            state=self.state,
            reason="" if self.state == "ready" else f"replica {self.index} is {self.state}",
            name="fake",
            input_size=(8, 8),
            labels=("a", "b", "c"),
            images_served=self.predictions,
            pid=1000 + self.index,
        )

    def metrics_text(self) -> bytes:
        return (
            "# HELP onemodel_images Images predicted.\n"
            "# TYPE onemodel_images counter\n"
            f"onemodel_images_total {self.predictions}.0\n"
        ).encode()

    def spec(self) -> ModelInfo:
        if self.error is not None:
            raise self.error
        return self.info()

    def close(self) -> None:
        pass


class Fleet:
    """Fake replicas by address, and the factory a pool builds its clients with."""

    def __init__(self) -> None:
        self.replicas: dict[Address, FakeReplica] = {}

    def add(self, address: Address) -> FakeReplica:
        replica = FakeReplica(len(self.replicas))
        self.replicas[address] = replica
        return replica

    def factory(self, address: Address, info_timeout_s: float, *_: object) -> FakeReplica:
        return self.replicas.setdefault(address, FakeReplica(len(self.replicas)))


ADDRESS_A = parse_address("10.0.0.1:7000")
ADDRESS_B = parse_address("10.0.0.2:7000")


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture
def make_pool(fleet: Fleet) -> Iterator[Callable[..., ModelPool]]:
    pools: list[ModelPool] = []

    def make(targets: list[Address] | None = None, **options: Any) -> ModelPool:
        options.setdefault("probe_interval_s", 0.05)
        options.setdefault("rng", random.Random(4))
        pool = ModelPool(
            targets or [ADDRESS_A, ADDRESS_B],
            b"k" * 32,
            client_factory=fleet.factory,
            **options,
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def _answered_by(pool: ModelPool) -> int:
    return int(pool.predict(IMAGES, timeout_s=5.0)[0, 0])


def test_requests_spread_over_both_replicas(make_pool: Callable[..., ModelPool]) -> None:
    pool = make_pool()
    counts = [0, 0]
    for _ in range(200):
        counts[_answered_by(pool)] += 1
    assert min(counts) / max(counts) > 0.6, counts


def test_choice_prefers_the_replica_with_fewer_outstanding(
    make_pool: Callable[..., ModelPool],
) -> None:
    pool = make_pool()
    busy = pool._replicas[ADDRESS_A]
    busy.outstanding = 3
    assert {_answered_by(pool) for _ in range(50)} == {1}
    busy.outstanding = 0


@pytest.mark.parametrize(
    "error",
    [
        ModelUnavailableError("the model server is not running"),
        ModelServerStoppingError(),
        OverloadedError(),
    ],
    ids=["dead", "stopping", "overloaded"],
)
def test_a_failing_replica_fails_over_to_the_other(
    make_pool: Callable[..., ModelPool], fleet: Fleet, error: Exception
) -> None:
    pool = make_pool(probe_interval_s=60.0)
    fleet.factory(ADDRESS_A, 1.0).error = error
    assert [_answered_by(pool) for _ in range(20)] == [1] * 20
    (status_a, status_b) = pool.replica_statuses()
    # A full queue is a moment's state: that replica stays in the pool.
    assert status_a.ready is isinstance(error, OverloadedError)
    assert status_b.outstanding == 0


def test_stopping_replica_is_reported_stopping(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool(probe_interval_s=60.0)
    fleet.factory(ADDRESS_A, 1.0).error = ModelServerStoppingError()
    for _ in range(10):
        _answered_by(pool)
    assert pool.replica_statuses()[0].state == "stopping"


def test_error_only_when_no_replica_answers(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool()
    for address in (ADDRESS_A, ADDRESS_B):
        fleet.factory(address, 1.0).error = ModelUnavailableError("the model server is not running")
    with pytest.raises(ModelUnavailableError, match="not running"):
        pool.predict(IMAGES, timeout_s=1.0)


def test_bad_input_is_not_retried_elsewhere(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool()
    for address in (ADDRESS_A, ADDRESS_B):
        fleet.factory(address, 1.0).error = InvalidRequestError("wrong shape")
    with pytest.raises(InvalidRequestError):
        pool.predict(IMAGES, timeout_s=1.0)
    assert sum(replica.predictions for replica in fleet.replicas.values()) == 0


def test_a_lone_failed_replica_is_still_tried(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool([ADDRESS_A], probe_interval_s=60.0)
    replica = fleet.factory(ADDRESS_A, 1.0)
    replica.error = ModelUnavailableError("the model server is not running")
    with pytest.raises(ModelUnavailableError):
        pool.predict(IMAGES, timeout_s=1.0)
    replica.error = None
    assert _answered_by(pool) == 0  # no waiting for a probe when nothing else exists


def test_a_lone_replica_a_probe_found_down_fails_fast_without_a_try(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool([ADDRESS_A], probe_interval_s=0.05)
    replica = fleet.factory(ADDRESS_A, 1.0)
    replica.info_error = ModelUnavailableError("the model server is not running")
    assert not pool.info().ready
    assert pool.replica_statuses()[0].state == "unreachable"
    replica.hang = threading.Event()  # a try would hang: the pool must not try
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError, match="not running"):
        pool.predict(IMAGES, timeout_s=5.0)
    assert time.monotonic() - started < 0.5
    replica.hang.set()


def test_a_lone_stopping_replica_answers_the_stopping_error(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool([ADDRESS_A], probe_interval_s=60.0)
    fleet.factory(ADDRESS_A, 1.0).error = ModelServerStoppingError()
    for _ in range(3):
        with pytest.raises(ModelServerStoppingError):
            pool.predict(IMAGES, timeout_s=1.0)


def test_a_replica_that_comes_back_is_used_again(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool()
    replica_a = fleet.factory(ADDRESS_A, 1.0)
    replica_a.error = ModelUnavailableError("the model server is not running")
    replica_a.info_error = ModelUnavailableError("the model server is not running")
    for _ in range(10):
        assert _answered_by(pool) == 1
    replica_a.error = replica_a.info_error = None
    wait_until(lambda: pool.replica_statuses()[0].ready, 5.0, "replica A ready again")
    assert 0 in {_answered_by(pool) for _ in range(50)}


def test_a_replica_that_stops_answering_probes_loses_its_waiting_requests(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool(probe_interval_s=0.05)
    replica_a = fleet.factory(ADDRESS_A, 1.0)
    assert pool.info().ready
    replica_a.hang = threading.Event()
    pool._replicas[ADDRESS_B].outstanding = 100
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(_answered_by(pool)))
    started = time.monotonic()
    thread.start()
    wait_until(lambda: pool.replica_statuses()[0].outstanding == 1, 5.0, "request on A")
    replica_a.info_error = ModelUnavailableError("does not answer")
    thread.join(5.0)
    elapsed = time.monotonic() - started
    pool._replicas[ADDRESS_B].outstanding = 0
    replica_a.hang.set()
    assert results == [1]
    assert replica_a.abandoned == 1
    assert elapsed < 2.0


def test_info_lists_every_replica_and_is_ready_while_one_is(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool(probe_interval_s=60.0)
    fleet.factory(ADDRESS_B, 1.0).info_error = ModelUnavailableError("not running")
    info = pool.info()
    assert info.ready is True
    assert info.name == "fake"
    replicas = info.extra["replicas"]
    assert [(r["address"], r["ready"]) for r in replicas] == [
        ("10.0.0.1:7000", True),
        ("10.0.0.2:7000", False),
    ]
    assert set(replicas[0]) >= {"address", "ready", "images_served", "outstanding"}
    assert info.public()["replicas"] == replicas  # what /readyz shows


def test_info_not_ready_when_no_replica_is(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool(probe_interval_s=60.0)
    fleet.factory(ADDRESS_A, 1.0).state = "loading"
    fleet.factory(ADDRESS_B, 1.0).info_error = ModelUnavailableError("not running")
    info = pool.info()
    assert info.ready is False
    assert info.state == "loading"
    assert "replica 0 is loading" in info.reason
    assert len(info.extra["replicas"]) == 2


def test_dns_targets_are_re_resolved_and_slots_reused(
    make_pool: Callable[..., ModelPool],
) -> None:
    answers = [["10.0.0.1", "10.0.0.2"]]

    def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("model-server", 7000)
        return answers[-1]

    pool = make_pool(
        [parse_address("dns:model-server:7000")], resolver=resolver, resolve_interval_s=0.02
    )
    assert [(s.address, s.replica) for s in pool.replica_statuses()] == [
        ("10.0.0.1:7000", "0"),
        ("10.0.0.2:7000", "1"),
    ]
    pool.predict(IMAGES, timeout_s=1.0)  # starts the resolver
    answers.append(["10.0.0.2", "10.0.0.3"])
    wait_until(
        lambda: (
            [(s.address, s.replica) for s in pool.replica_statuses()]
            == [("10.0.0.3:7000", "0"), ("10.0.0.2:7000", "1")]
        ),
        5.0,
        "the new set of replicas",
    )


def test_a_failed_lookup_keeps_the_known_replicas(make_pool: Callable[..., ModelPool]) -> None:
    calls = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        if len(calls) > 1:
            raise OSError("temporary failure in name resolution")
        return ["10.0.0.1"]

    pool = make_pool(
        [parse_address("dns:model-server:7000")], resolver=resolver, resolve_interval_s=0.02
    )
    pool.predict(IMAGES, timeout_s=1.0)
    wait_until(lambda: len(calls) >= 3, 5.0, "several look-ups")
    assert [s.address for s in pool.replica_statuses()] == ["10.0.0.1:7000"]


def test_metrics_label_every_sample_with_its_replica(make_pool: Callable[..., ModelPool]) -> None:
    pool = make_pool()
    text = pool.metrics_text().decode()
    assert text.count("# TYPE onemodel_images counter") == 1
    assert 'onemodel_images_total{replica="0"} 0.0' in text
    assert 'onemodel_images_total{replica="1"} 0.0' in text


def test_label_exposition_keeps_families_together() -> None:
    histogram = (
        b"# HELP h Batch sizes.\n# TYPE h histogram\n"
        b'h_bucket{le="1.0"} 2.0\nh_count 2.0\nh_sum 2.0\n'
        b"# HELP g Queue.\n# TYPE g gauge\ng 0.0\n"
    )
    merged = label_exposition([("0", histogram), ("1", histogram)]).decode().splitlines()
    assert merged == [
        "# HELP h Batch sizes.",
        "# TYPE h histogram",
        'h_bucket{replica="0",le="1.0"} 2.0',
        'h_count{replica="0"} 2.0',
        'h_sum{replica="0"} 2.0',
        'h_bucket{replica="1",le="1.0"} 2.0',
        'h_count{replica="1"} 2.0',
        'h_sum{replica="1"} 2.0',
        "# HELP g Queue.",
        "# TYPE g gauge",
        'g{replica="0"} 0.0',
        'g{replica="1"} 0.0',
    ]


def test_pool_needs_an_address() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ModelPool([], b"k" * 32)


def test_round_robin_takes_turns(make_pool: Callable[..., ModelPool]) -> None:
    pool = make_pool(balance="round_robin")
    answers = [_answered_by(pool) for _ in range(6)]
    assert answers in ([0, 1] * 3, [1, 0] * 3)


def test_fill_packs_the_busiest_replica_below_its_batch_limit(
    make_pool: Callable[..., ModelPool],
) -> None:
    pool = make_pool(balance="fill")
    replica_a = pool._replicas[ADDRESS_A]
    replica_a.outstanding = 3
    assert {_answered_by(pool) for _ in range(20)} == {0}
    replica_a.outstanding = 8  # at the (default) limit of 8: spill to the other
    assert {_answered_by(pool) for _ in range(20)} == {1}
    replica_a.outstanding = 0


def test_unknown_balance_is_refused() -> None:
    with pytest.raises(ValueError, match="balance"):
        ModelPool([ADDRESS_A], b"k" * 32, balance="random")


def test_a_replica_on_another_version_is_not_failed_over_and_the_spec_is_read_again(
    make_pool: Callable[..., ModelPool], fleet: Fleet
) -> None:
    pool = make_pool([ADDRESS_A], probe_interval_s=60.0)
    replica = fleet.factory(ADDRESS_A, 1.0)
    first = pool.spec()
    replica.error = ModelChangedError("version 1 of 'fake' is no longer served; version 2 is")
    with pytest.raises(ModelChangedError):
        pool.predict(IMAGES, timeout_s=1.0, version="1")
    assert pool.replica_statuses()[0].ready  # healthy: it serves another version
    replica.error = None
    assert pool.spec() is not first  # read again, not the cached one
