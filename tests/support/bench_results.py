"""Small synthetic engine-panel results, shaped as bench/engine_panels.py writes them (tests)."""

from __future__ import annotations

from typing import Any

MIB = 2**20


def ceiling(rates: dict[int, float], computes: str = "f32", pss_mib: int = 0) -> dict[str, Any]:
    """Return a ceiling entry with one window per batch size."""
    entry: dict[str, Any] = {
        "ready": {"inference_precision": computes, "engine_reason": ""},
        "batches": [
            {"batch": batch, "images_per_s": rate, "other_cpu_share": 0.05}
            for batch, rate in rates.items()
        ],
        "measurements": [
            {"batch": batch, "images_per_s": rate, "other_cpu_share": 0.05}
            for batch, rate in rates.items()
        ],
    }
    if pss_mib:
        entry["memory"] = {"pss_bytes": pss_mib * MIB, "rss_bytes": (pss_mib + 50) * MIB}
    return entry


def served(
    rates: dict[int, float],
    top1: float | None = 1.0,
    pss_mib: int = 500,
    engine_reason: str = "",
) -> dict[str, Any]:
    """Return a served entry with one point per concurrency."""
    agreement = None if top1 is None else {"images": 4, "top1": top1, "max_abs_diff": 1e-9}
    return {
        "config": {"workers": 4, "threads": 8},
        "ready_info": {"agreement": agreement, "engine_reason": engine_reason},
        "points": [
            {
                "concurrency": concurrency,
                "upload": "224",
                "images_per_s": rate,
                "other_cpu_share": 0.05,
                "cpu_ms_per_request": {"decoder": 0.8, "model_server": 9.0, "worker": 2.0},
                "web_tier_cpu_ms_per_request": 2.8,
            }
            for concurrency, rate in rates.items()
        ],
        "memory": {"pss_bytes": pss_mib * MIB, "rss_bytes": (pss_mib + 100) * MIB},
    }


def refused(reason: str) -> dict[str, Any]:
    """Return the entry of a precision onemodel refused to prepare."""
    return {"error": reason, "refused": True}


def panel(model: str, ceilings: dict[str, Any], served_: dict[str, Any]) -> dict[str, Any]:
    """Return one engine panel."""
    return {
        "model": model,
        "upload": "224",
        "rounds": 3,
        "ceiling_duration_s": 2.0,
        "duration_s": 6.0,
        "load_average_start": [1.0, 1.0, 1.0],
        "load_average_end": [2.0, 2.0, 2.0],
        "ceilings": ceilings,
        "served": served_,
    }


def results(*panels: dict[str, Any], flags: tuple[str, ...] = ("avx2",)) -> dict[str, Any]:
    """Return a run's results holding only engine panels."""
    return {
        "meta": {"machine": {"cpu_flags_of_note": list(flags)}},
        "panels": [],
        "engines": list(panels),
    }
