"""CPU per role diffed process by process, across processes that come and go."""

from __future__ import annotations

import pytest
from processes import CpuSample, cpu_spent_by_role

WORKER, DECODER, MODEL = 10, 20, 30


def test_each_role_gets_what_its_processes_used_in_between() -> None:
    before = {
        WORKER: CpuSample("worker", 1, own_s=5.0, children_s=0.0),
        DECODER: CpuSample("decoder", WORKER, own_s=1.0, children_s=0.0),
        MODEL: CpuSample("model_server", 1, own_s=50.0, children_s=0.0),
    }
    after = {
        WORKER: CpuSample("worker", 1, own_s=6.0, children_s=0.0),
        DECODER: CpuSample("decoder", WORKER, own_s=1.5, children_s=0.0),
        MODEL: CpuSample("model_server", 1, own_s=60.0, children_s=0.0),
    }
    spent = cpu_spent_by_role(before, after)
    assert spent == pytest.approx({"worker": 1.0, "decoder": 0.5, "model_server": 10.0})


def test_a_replaced_decoder_counts_only_its_last_seconds_and_its_successor() -> None:
    before = {
        WORKER: CpuSample("worker", 1, own_s=5.0, children_s=0.0),
        DECODER: CpuSample("decoder", WORKER, own_s=4.0, children_s=0.0),
    }
    # The decoder used 0.5 s more, was killed and waited for (its 4.5 s land in the worker's
    # children times); its successor has used 0.2 s so far.
    after = {
        WORKER: CpuSample("worker", 1, own_s=5.3, children_s=4.5),
        21: CpuSample("decoder", WORKER, own_s=0.2, children_s=0.0),
    }
    spent = cpu_spent_by_role(before, after)
    assert spent["worker"] == pytest.approx(0.3)
    assert spent["decoder"] == pytest.approx(0.7)


def test_a_vanished_process_never_makes_its_role_negative() -> None:
    before = {
        WORKER: CpuSample("worker", 1, own_s=5.0, children_s=0.0),
        DECODER: CpuSample("decoder", WORKER, own_s=4.0, children_s=0.0),
    }
    after = {WORKER: CpuSample("worker", 1, own_s=5.5, children_s=0.0)}  # not yet waited for
    spent = cpu_spent_by_role(before, after)
    assert spent == pytest.approx({"worker": 0.5})
