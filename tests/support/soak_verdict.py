"""The soak run's verdict: how RSS drift is measured and when a run fails (scripts/soak.py)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def drift(values: Sequence[float]) -> dict[str, float]:
    """Compare the mean of the first third of values with the mean of the last third."""
    if len(values) < 3:
        raise ValueError("need at least 3 samples to compare thirds")
    third = len(values) // 3
    first, last = statistics.fmean(values[:third]), statistics.fmean(values[-third:])
    return {
        "first_mb": round(first / 2**20, 2),
        "last_mb": round(last / 2**20, 2),
        "drift_mb": round((last - first) / 2**20, 2),
        "drift_pct": round(100.0 * (last - first) / first, 2) if first else 0.0,
    }


def problems(report: dict[str, Any], max_drift_mb: float, max_drift_pct: float) -> list[str]:
    """Return what is wrong with a finished run (empty: it passed)."""
    found = []
    if report["unexpected"]:
        found.append(f"{report['unexpected']} answers had an unexpected status")
    if report["requests"] == 0:
        found.append("no request was answered")
    if not report["processes_stable"]:
        found.append("a worker or the model server was restarted during the run")
    for group, figures in report["rss_drift"].items():
        if figures["drift_mb"] > max_drift_mb and figures["drift_pct"] > max_drift_pct:
            found.append(
                f"{group} RSS grew {figures['drift_mb']} MB ({figures['drift_pct']} %), above "
                f"{max_drift_mb} MB and {max_drift_pct} %"
            )
    return found


def default_sampling(duration_s: float) -> tuple[float, float]:
    """Return (sample_every_s, warmup_s) for a run: about 60 samples, the first 10 % ignored."""
    return max(0.5, duration_s / 60), 0.1 * duration_s
