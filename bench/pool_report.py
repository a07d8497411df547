"""The pool benchmark's tables (bench/pool.py's results), for the terminal and the docs page.

bench/report.py renders a full run's page and passes its table renderer in, so this module
needs nothing from it (and report.py imports this one without a circle).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pool_figures

Table = Callable[[Sequence[str], Sequence[Sequence[object]]], str]
MIB = 2**20
FAULT_LABELS = {"kill-9": "kill -9", "sigterm": "SIGTERM"}

TARGET_HEADERS = ("target", "wanted", "measured", "verdict")
STEADY_HEADERS = (
    "model servers",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "non-200",
    "images per replica",
    "spread min/max",
    "other CPU",
)
FAULT_HEADERS = (
    "model servers",
    "fault",
    "requests",
    "non-200",
    "longest gap without a 200 (s)",
    "p95 ms meanwhile",
    "200/s meanwhile",
    "gone (s)",
    "ready again (s)",
    "serving again (s)",
    "drain logged",
)
MEMORY_HEADERS = (
    "model servers",
    "total PSS MiB",
    "total USS MiB",
    "total RSS MiB",
    "PSS by role (MiB)",
)


def tables(pool: Mapping[str, Any]) -> list[tuple[str, Sequence[str], list[list[object]]]]:
    """Return (title, headers, rows) for the targets, steady load, faults and memory."""
    return [
        ("targets (issue 12)", TARGET_HEADERS, target_rows(pool)),
        (f"steady load, {_clients(pool)} clients", STEADY_HEADERS, steady_rows(pool)),
        (
            f"one model server killed or stopped under load, {_clients(pool)} clients "
            "(times since the signal)",
            FAULT_HEADERS,
            fault_rows(pool),
        ),
        ("memory of the whole deployment", MEMORY_HEADERS, memory_rows(pool)),
    ]


def target_rows(pool: Mapping[str, Any]) -> list[list[object]]:
    """Return one row per target, evaluated again from the figures."""
    words = {True: "met", False: "**missed**", None: "not measured"}
    return [
        [verdict.name, verdict.wanted, verdict.measured, words[verdict.met]]
        for verdict in pool_figures.evaluate(pool)
    ]


def steady_rows(pool: Mapping[str, Any]) -> list[list[object]]:
    """Return one row per deployment: rate, latency, spread, other CPU (worst round)."""
    rows: list[list[object]] = []
    for system in pool.get("systems", []):
        if "steady" not in system:
            rows.append([system["replicas"], _failed(system), *["-"] * 7])
            continue
        steady, latency = system["steady"], system["steady"]["latency_ms"]
        shares = [entry["other_cpu_share"] for entry in steady["rounds"]]
        served = system.get("served_by_replica", {})
        rows.append(
            [
                system["replicas"],
                f"{steady['requests_per_s']:.0f}",
                _ms(latency["p50"]),
                _ms(latency["p95"]),
                _ms(latency["p99"]),
                steady["non_200"],
                " / ".join(str(count) for count in served.values()) or "-",
                "-" if system.get("spread") is None else f"{system['spread']:.2f}",
                f"{100 * max(shares, default=0.0):.0f}%",
            ]
        )
    return rows


def fault_rows(pool: Mapping[str, Any]) -> list[list[object]]:
    """Return one row per deployment and fault."""
    rows: list[list[object]] = []
    for system in pool.get("systems", []):
        for name, event in system.get("events", {}).items():
            label = FAULT_LABELS.get(name, name)
            if "error" in event:
                rows.append([system["replicas"], label, "failed: " + event["error"], *["-"] * 8])
                continue
            rows.append(
                [
                    system["replicas"],
                    label,
                    event["requests"],
                    _non_200(event),
                    f"{event['longest_gap_without_200_s']:.2f}",
                    _ms(event["latency_ms_during"]["p95"]),
                    _rate(event.get("ok_per_s_during")),
                    _s(event["exit_s"]),
                    _s(event["ready_s"]),
                    _s(event["serving_s"]),
                    {True: "yes", False: "**no**"}.get(event.get("drain_logged"), "-"),
                ]
            )
    return rows


def memory_rows(pool: Mapping[str, Any]) -> list[list[object]]:
    """Return one row per deployment: total PSS and RSS, PSS by process role."""
    rows: list[list[object]] = []
    for system in pool.get("systems", []):
        memory = system.get("memory")
        if not memory:
            continue
        roles = "; ".join(
            f"{role} {entry['processes']} x {entry['pss_bytes'] / entry['processes'] / MIB:.0f}"
            if entry["processes"] > 1
            else f"{role} {entry['pss_bytes'] / MIB:.0f}"
            for role, entry in sorted(memory["roles"].items())
        )
        rows.append(
            [
                system["replicas"],
                f"{memory['pss_bytes'] / MIB:.0f}",
                f"{memory['uss_bytes'] / MIB:.0f}",
                f"{memory['rss_bytes'] / MIB:.0f}",
                roles,
            ]
        )
    return rows


def method(pool: Mapping[str, Any]) -> str:
    """Return one paragraph saying what was run and how it was measured."""
    config = pool.get("config", {})
    return (
        f"`make bench-pool` (`python bench/pool.py`; `make bench` runs it too): onemodel under "
        f"Gunicorn ({config.get('workers')} workers x {config.get('threads')} threads) with "
        f"`MODEL_SERVER_REPLICAS=1` and `=2` (the master starts and supervises the model "
        f"servers), the `{config.get('model')}` model, engine `{config.get('engine')}`, "
        f"{config.get('precision')}; {config.get('clients')} client threads "
        f"(`bench/closed_loop.py`, in the bench's own process: on 2 cores it competes with the "
        "server for CPU, so rates are below wrk's) post the 224x224 JPEG to 127.0.0.1 and "
        "record every request. Steady rates alternate "
        f"{config.get('rounds')} rounds of {config.get('round_s')} s between the two "
        "deployments. Each fault runs under load: the signal goes to one model server; "
        "times are since the signal; `ready again` and `serving again` come from `/readyz` "
        "(the replica listed ready, then with more images served), polled every 0.1 s. "
        f"After an error a client waits {config.get('pause_after_failure_s')} s before its "
        "next request. Memory is measured with no other deployment of the bench running; "
        "USS counts the pages no other process shares, PSS splits shared ones (also with "
        "processes outside the bench). Load average "
        f"{_load(pool.get('load_average_start'))} at start, "
        f"{_load(pool.get('load_average_end'))} at end; "
        f"{pool.get('elapsed_s', 0) / 60:.1f} minutes."
    )


def markdown_lines(pool: Mapping[str, Any] | None, table: Table) -> list[str]:
    """Return the docs page's section (empty when the run has no pool results)."""
    if not pool:
        return []
    lines = ["### One vs two model servers: availability", "", method(pool)]
    for title, headers, rows in tables(pool):
        lines += ["", f"{title[0].upper()}{title[1:]}:", "", table(headers, rows)]
    return [*lines, ""]


def text_lines(pool: Mapping[str, Any] | None, table: Table) -> list[str]:
    """Return the section for the terminal (empty when the run has no pool results)."""
    if not pool:
        return []
    lines: list[str] = []
    for title, headers, rows in tables(pool):
        plain = [[str(cell).replace("**", "") for cell in row] for row in rows]
        lines += [f"\n=== pool: {title}", table(headers, plain)]
    return lines


def _non_200(event: Mapping[str, Any]) -> str:
    failed = {k: v for k, v in event["statuses"].items() if k != "200"}
    if not failed:
        return "0"
    return f"{event['non_200']} ({', '.join(f'{k}: {v}' for k, v in failed.items())})"


def _failed(system: Mapping[str, Any]) -> str:
    return "failed: " + str(system.get("error", "not measured")).strip().splitlines()[0][:60]


def _clients(pool: Mapping[str, Any]) -> object:
    return pool.get("config", {}).get("clients", "?")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def _load(values: Sequence[float] | None) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "?"
