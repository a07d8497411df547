"""The pool benchmark's pure figures: gaps without a 200, event windows, spread, verdicts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# bench/ is a folder of scripts (python bench/pool.py), not a package.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import pool_figures
from closed_loop import Outcome
from pool_figures import EventMarks


def _ok(finished_s: float, latency_s: float = 0.01) -> Outcome:
    return Outcome(finished_s - latency_s, finished_s, 200)


def _failed(finished_s: float, status: int | None = 503) -> Outcome:
    return Outcome(finished_s - 0.001, finished_s, status, None if status else "timeout")


def test_longest_gap_is_the_widest_space_between_200s_edges_included() -> None:
    assert pool_figures.longest_gap_s([1.0, 1.5, 4.0, 4.2], 0.0, 5.0) == pytest.approx(2.5)
    # From the window's start to the first 200, and from the last 200 to its end.
    assert pool_figures.longest_gap_s([3.0], 0.0, 4.0) == pytest.approx(3.0)
    assert pool_figures.longest_gap_s([0.5], 0.0, 4.0) == pytest.approx(3.5)


def test_longest_gap_without_any_200_is_the_whole_window() -> None:
    assert pool_figures.longest_gap_s([], 2.0, 7.0) == pytest.approx(5.0)
    assert pool_figures.longest_gap_s([1.0, 8.0], 2.0, 7.0) == pytest.approx(5.0)


def test_window_counts_only_200s_completed_inside_it() -> None:
    outcomes = [_ok(0.5), _ok(1.0), _ok(1.5), _failed(1.7), _ok(2.0), _ok(3.5)]
    figures = pool_figures.window_figures(outcomes, 1.0, 3.0)
    assert figures["requests"] == 4
    assert figures["non_200"] == 1
    assert figures["requests_per_s"] == pytest.approx(1.5)  # three 200s in 2 s
    assert figures["latency_ms"]["p50"] == pytest.approx(10.0)


def test_steady_figures_pool_several_windows() -> None:
    first = [_ok(1.0 + i / 10) for i in range(10)]  # 10 in [1, 2)
    second = [_ok(5.0 + i / 20, latency_s=0.03) for i in range(20)]  # 20 in [5, 6)
    figures = pool_figures.steady_figures([(first, 1.0, 2.0), (second, 5.0, 6.0)])
    assert figures["window_s"] == pytest.approx(2.0)
    assert figures["requests_per_s"] == pytest.approx(15.0)
    assert figures["latency_ms"]["p95"] == pytest.approx(30.0)


def test_event_figures_of_an_outage_and_the_replica_coming_back() -> None:
    before = [_ok(t / 10) for t in range(1, 20)]  # 0.1 .. 1.9
    outage = [_failed(2.0 + t / 10) for t in range(30)]  # 2.0 .. 4.9
    after = [_ok(5.0 + t / 10) for t in range(10)]  # 5.0 .. 5.9
    marks = EventMarks(
        load_start_s=0.0,
        hit_s=2.0,
        exited_s=2.01,
        restarted_s=2.6,
        ready_s=4.8,
        serving_s=5.1,
        load_end_s=6.0,
    )
    figures = pool_figures.event_figures(before + outage + after, marks)
    assert figures["requests"] == 59
    assert figures["non_200"] == 30
    assert figures["statuses"] == {"200": 29, "503": 30}
    assert figures["longest_gap_without_200_s"] == pytest.approx(3.1)  # 1.9 -> 5.0
    assert figures["failures_span_s"] == pytest.approx(2.9)
    assert figures["exit_s"] == pytest.approx(0.01)
    assert figures["ready_s"] == pytest.approx(2.8)
    assert figures["serving_s"] == pytest.approx(3.1)
    assert figures["ready_to_serving_s"] == pytest.approx(0.3)
    # In flight from the signal until it served again: the outage and the first 200s back.
    assert figures["requests_during"] == 32


def test_event_that_never_recovers_reports_none_and_runs_to_the_load_end() -> None:
    marks = EventMarks(0.0, 1.0, 1.1, None, None, None, 3.0)
    figures = pool_figures.event_figures([_ok(0.5), _failed(2.0, None)], marks)
    assert figures["statuses"] == {"200": 1, "timeout": 1}
    assert figures["serving_s"] is None and figures["ready_to_serving_s"] is None
    assert figures["longest_gap_without_200_s"] == pytest.approx(2.5)


def test_spread_is_min_over_max_and_undefined_for_one_replica() -> None:
    assert pool_figures.spread({"a": 300, "b": 100}) == pytest.approx(0.333)
    assert pool_figures.spread({"a": 0, "b": 0}) == 0.0
    assert pool_figures.spread({"a": 500}) is None
    assert pool_figures.served_delta({"a": 10, "b": 5}, {"a": 30, "b": 5}) == {"a": 20, "b": 0}


def _event(non_200: int, ready_to_serving_s: float | None, requests: int = 1000) -> dict[str, Any]:
    return {
        "requests": requests,
        "non_200": non_200,
        "longest_gap_without_200_s": 0.2,
        "ready_to_serving_s": ready_to_serving_s,
        "serving_s": None if ready_to_serving_s is None else 30.0,
    }


def _pool(kill: dict[str, Any], term: dict[str, Any], spread: float) -> dict[str, Any]:
    one = {"replicas": 1, "events": {"kill-9": _event(500, 0.1), "sigterm": _event(400, 0.1)}}
    two = {
        "replicas": 2,
        "events": {"kill-9": kill, "sigterm": term},
        "spread": spread,
        "served_by_replica": {"a": 100, "b": int(100 * spread)},
    }
    return {"systems": [one, two]}


def test_targets_met_when_two_replicas_lose_nothing_and_rejoin_fast() -> None:
    verdicts = pool_figures.evaluate(_pool(_event(0, 0.3), _event(0, 0.4), 0.9))
    assert [verdict.met for verdict in verdicts] == [True, True, True, True]
    assert "1000 / 1000 were 200" in verdicts[0].measured


def test_targets_missed_on_one_lost_request_a_slow_rejoin_or_a_skewed_spread() -> None:
    verdicts = pool_figures.evaluate(_pool(_event(1, 0.3), _event(0, 12.0), 0.2))
    assert [verdict.met for verdict in verdicts] == [False, True, False, False]
    never = pool_figures.evaluate(_pool(_event(0, 0.3), _event(0, None), 0.5))
    assert never[2].met is False and "never served again" in never[2].measured


def test_targets_not_measured_without_the_two_replica_system() -> None:
    verdicts = pool_figures.evaluate({"systems": [{"replicas": 2, "error": "did not start"}]})
    assert [verdict.met for verdict in verdicts] == [None, None, None, None]
