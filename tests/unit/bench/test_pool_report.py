"""The pool benchmark's section of docs/benchmarks.md, rendered from recorded figures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import pool_report
import report


def _event(
    non_200: int, statuses: dict[str, int], serving_s: float | None, drained: bool | None = None
) -> dict[str, Any]:
    event = {
        "requests": sum(statuses.values()),
        "statuses": statuses,
        "non_200": non_200,
        "longest_gap_without_200_s": 25.4 if non_200 else 0.21,
        "latency_ms_during": {"p50": 10.0, "p95": 40.0, "p99": 50.0, "max": 60.0},
        "ok_per_s_during": 150.0,
        "exit_s": 0.01,
        "ready_s": None if serving_s is None else serving_s - 0.2,
        "serving_s": serving_s,
        "ready_to_serving_s": None if serving_s is None else 0.2,
    }
    return event if drained is None else {**event, "drain_logged": drained}


def _memory(model_servers: int) -> dict[str, Any]:
    mib = 2**20
    roles = {
        "master": {"rss_bytes": 20 * mib, "pss_bytes": 15 * mib, "processes": 1},
        "model_server": {
            "rss_bytes": model_servers * 500 * mib,
            "pss_bytes": model_servers * 400 * mib,
            "processes": model_servers,
        },
    }
    return {
        "rss_bytes": (20 + 500 * model_servers) * mib,
        "pss_bytes": (15 + 400 * model_servers) * mib,
        "uss_bytes": (10 + 300 * model_servers) * mib,
        "roles": roles,
    }


def _steady(rate: float) -> dict[str, Any]:
    latency = {"p50": 30.0, "p95": 60.0, "p99": 90.0, "max": 100.0}
    return {
        "requests_per_s": rate,
        "latency_ms": latency,
        "non_200": 0,
        "rounds": [{"other_cpu_share": 0.05}, {"other_cpu_share": 0.12}],
    }


POOL = {
    "config": {"workers": 4, "threads": 8, "model": "tiny", "engine": "tensorflow"},
    "load_average_start": [1.0, 1.0, 1.0],
    "load_average_end": [2.0, 1.5, 1.0],
    "elapsed_s": 240.0,
    "systems": [
        {
            "replicas": 1,
            "steady": _steady(200.0),
            "served_by_replica": {"/tmp/x/model.sock": 1000},
            "spread": None,
            "memory": _memory(1),
            "events": {"kill-9": _event(1800, {"200": 800, "503": 1800}, 25.5)},
        },
        {
            "replicas": 2,
            "steady": _steady(205.0),
            "served_by_replica": {"/tmp/x/model-0.sock": 480, "/tmp/x/model-1.sock": 520},
            "spread": 0.92,
            "memory": _memory(2),
            "events": {
                "kill-9": _event(0, {"200": 7000}, 40.0),
                "sigterm": _event(0, {"200": 9000}, None, drained=True),
            },
        },
    ],
}


def test_the_section_has_every_table_with_the_figures() -> None:
    text = "\n".join(pool_report.markdown_lines(POOL, report.markdown_table))
    assert text.startswith("### One vs two model servers")
    assert (
        "| 1 | kill -9 | 2600 | 1800 (503: 1800) | 25.40 | 40.0 | 150 | 0.01 | 25.30 | 25.50 | - |"
        in text
    )
    assert "| 2 | SIGTERM | 9000 | 0 | 0.21 | 40.0 | 150 | 0.01 | never | never | yes |" in text
    assert "| 2 | 205 | 30.0 | 60.0 | 90.0 | 0 | 480 / 520 | 0.92 | 12% |" in text
    assert "| 2 | 815 | 610 | 1020 | master 15; model_server 2 x 400 |" in text
    # The SIGTERM victim never served again: the rejoin target is missed, the rest met.
    assert text.count("| met |") == 3 and text.count("| **missed** |") == 1


def test_a_run_without_pool_results_renders_nothing() -> None:
    assert pool_report.markdown_lines(None, report.markdown_table) == []
    assert pool_report.text_lines({}, report.text_table) == []


def test_a_deployment_that_did_not_start_is_a_row_not_a_crash() -> None:
    failed = {"systems": [{"replicas": 2, "error": "gunicorn exited early:\nTraceback"}]}
    text = "\n".join(pool_report.text_lines(failed, report.text_table))
    assert "failed: gunicorn exited early:" in text
    assert "not measured" in text
