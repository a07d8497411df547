"""The pool benchmark's figures from recorded requests: rates, gaps, spread, and its targets.

Pure functions of Outcome lists and timestamps (time.monotonic() seconds), so they are unit
tested without a server (tests/unit/bench/test_pool_figures.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from closed_loop import Outcome
from targets import Verdict

# The targets for two replicas under 8 clients (issue 12).
REJOIN_LIMIT_S = 10.0
MIN_SPREAD = 0.25


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile (fraction in 0..1) of values; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def status_counts(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Return how many requests ended with each status ("200", "503", or the error's type)."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = str(outcome.status) if outcome.status is not None else str(outcome.error)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def latency_ms(outcomes: Iterable[Outcome]) -> dict[str, float | None]:
    """Return p50, p95, p99 and max latency in milliseconds (None when there are none)."""
    latencies = [1000.0 * outcome.latency_s for outcome in outcomes]
    figures = {
        "p50": percentile(latencies, 0.50),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies, default=None),
    }
    return {key: None if value is None else round(value, 2) for key, value in figures.items()}


def window_figures(outcomes: Sequence[Outcome], start_s: float, end_s: float) -> dict[str, Any]:
    """Return the rate of 200s completed in [start_s, end_s] and those requests' latencies.

    The window lies inside a running closed loop (after its ramp, before its stop), so
    counting completions in it is not biased by the first round or the last.
    """
    return steady_figures([(outcomes, start_s, end_s)])


def steady_figures(windows: Sequence[tuple[Sequence[Outcome], float, float]]) -> dict[str, Any]:
    """Return the rate and latencies over several windows (each: outcomes, start, end)."""
    inside = [
        outcome
        for outcomes, start_s, end_s in windows
        for outcome in outcomes
        if start_s <= outcome.finished_s <= end_s
    ]
    ok = [o for o in inside if o.ok]
    length = sum(end_s - start_s for _, start_s, end_s in windows)
    return {
        "window_s": round(length, 3),
        "requests": len(inside),
        "non_200": len(inside) - len(ok),
        "requests_per_s": round(len(ok) / length, 2) if length > 0 else 0.0,
        "latency_ms": latency_ms(ok),
    }


def longest_gap_s(ok_finished_s: Iterable[float], start_s: float, end_s: float) -> float:
    """Return the longest time in [start_s, end_s] during which no 200 completed.

    The edges count: from start_s to the first 200, and from the last 200 to end_s.
    """
    times = sorted(t for t in ok_finished_s if start_s <= t <= end_s)
    edges = [start_s, *times, end_s]
    return max(later - earlier for earlier, later in itertools.pairwise(edges))


@dataclass(frozen=True)
class EventMarks:
    """When things happened around one fault (time.monotonic() seconds; None: never seen)."""

    load_start_s: float
    hit_s: float  # the signal was sent
    exited_s: float | None  # the victim process was gone
    restarted_s: float | None  # a new process for its address was running
    ready_s: float | None  # /readyz listed its address ready again
    serving_s: float | None  # /readyz showed it had served images since
    load_end_s: float


def event_figures(outcomes: Sequence[Outcome], marks: EventMarks) -> dict[str, Any]:
    """Return what clients saw around one fault, and how long the replica took to come back.

    ``during`` holds the requests in flight at any moment from the signal until the victim
    served again (or the load's end, if it never did).
    """
    event_end = marks.serving_s if marks.serving_s is not None else marks.load_end_s
    during = [o for o in outcomes if o.finished_s >= marks.hit_s and o.started_s <= event_end]
    failed = [o for o in outcomes if not o.ok]
    oks = [o.finished_s for o in outcomes if o.ok]

    def since_hit(mark: float | None) -> float | None:
        return None if mark is None else round(mark - marks.hit_s, 3)

    first_failure = min((o.finished_s for o in failed), default=None)
    last_failure = max((o.finished_s for o in failed), default=None)
    return {
        "requests": len(outcomes),
        "statuses": status_counts(outcomes),
        "non_200": len(failed),
        "longest_gap_without_200_s": round(
            longest_gap_s(oks, marks.load_start_s, marks.load_end_s), 3
        ),
        "failures_span_s": (
            None
            if first_failure is None or last_failure is None
            else round(last_failure - first_failure, 3)
        ),
        "latency_ms_during": latency_ms(during),
        "requests_during": len(during),
        # 200s completed per second from the signal until it served again.
        "ok_per_s_during": window_figures(outcomes, marks.hit_s, event_end)["requests_per_s"],
        "exit_s": since_hit(marks.exited_s),
        "restarted_s": since_hit(marks.restarted_s),
        "ready_s": since_hit(marks.ready_s),
        "serving_s": since_hit(marks.serving_s),
        "ready_to_serving_s": (
            None
            if marks.ready_s is None or marks.serving_s is None
            else round(marks.serving_s - marks.ready_s, 3)
        ),
        "load_s": round(marks.load_end_s - marks.load_start_s, 3),
    }


def spread(served_by_replica: Mapping[str, int]) -> float | None:
    """Return min/max of the images each replica served (None with fewer than two)."""
    if len(served_by_replica) < 2:
        return None
    most = max(served_by_replica.values())
    return round(min(served_by_replica.values()) / most, 3) if most > 0 else 0.0


def served_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Return the images each replica served between two /readyz readings."""
    return {address: after[address] - before.get(address, 0) for address in sorted(after)}


def evaluate(pool: Mapping[str, Any]) -> list[Verdict]:
    """Return the issue's targets for the two-replica system (not measured when absent)."""
    systems: list[dict[str, Any]] = pool.get("systems", [])
    system = next((s for s in systems if s.get("replicas") == 2), {})
    events = system.get("events", {})
    verdicts = [
        _every_request_ok("2 replicas, 8 clients: kill -9 of one", events.get("kill-9")),
        _every_request_ok("2 replicas, 8 clients: SIGTERM of one", events.get("sigterm")),
        _rejoin(events),
    ]
    value = system.get("spread")
    wanted = f">= {MIN_SPREAD:g}"
    name = "2 replicas, 8 clients: load spread min/max"
    if value is None:
        verdicts.append(Verdict(name, wanted, "not measured", None))
    else:
        served = system.get("served_by_replica", {})
        counts = " / ".join(str(count) for count in served.values())
        verdicts.append(
            Verdict(name, wanted, f"{value:.2f} ({counts} images)", value >= MIN_SPREAD)
        )
    return verdicts


def _every_request_ok(name: str, event: Mapping[str, Any] | None) -> Verdict:
    wanted = "every request 200"
    if not event or "error" in event:
        return Verdict(name, wanted, "not measured", None)
    measured = (
        f"{event['requests'] - event['non_200']} / {event['requests']} were 200, "
        f"longest gap {event['longest_gap_without_200_s']:.2f} s"
    )
    return Verdict(name, wanted, measured, event["non_200"] == 0)


def _rejoin(events: Mapping[str, Any]) -> Verdict:
    name = "2 replicas: the restarted one serves again (same Gunicorn)"
    wanted = f"<= {REJOIN_LIMIT_S:g} s after it is ready"
    measured_events = {key: e for key, e in events.items() if e and "error" not in e}
    if not measured_events:
        return Verdict(name, wanted, "not measured", None)
    parts, met = [], True
    for key, event in measured_events.items():
        rejoin, serving = event.get("ready_to_serving_s"), event.get("serving_s")
        if rejoin is None or serving is None:
            parts.append(f"{key}: never served again")
            met = False
            continue
        parts.append(f"{key}: {rejoin:.2f} s ({serving:.1f} s after the signal)")
        met = met and rejoin <= REJOIN_LIMIT_S
    return Verdict(name, wanted, "; ".join(parts), met)
