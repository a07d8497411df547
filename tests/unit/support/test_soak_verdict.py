"""The soak run's verdict (tests/support/soak_verdict.py): RSS drift and when a run fails."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import soak_verdict as soak

MB = 2**20


def _report(**changes: Any) -> dict[str, Any]:
    report = {
        "unexpected": 0,
        "requests": 100,
        "processes_stable": True,
        "rss_drift": {"model_server": soak.drift([100 * MB] * 9)},
    }
    report.update(changes)
    return report


def test_drift_compares_the_first_and_last_thirds() -> None:
    values = [
        100 * MB,
        100 * MB,
        110 * MB,
        999 * MB,
        999 * MB,
        999 * MB,
        120 * MB,
        120 * MB,
        130 * MB,
    ]
    figures = soak.drift(values)
    assert figures["first_mb"] == pytest.approx(310 / 3, abs=0.01)
    assert figures["last_mb"] == pytest.approx(370 / 3, abs=0.01)
    assert figures["drift_mb"] == pytest.approx(20, abs=0.01)
    assert figures["drift_pct"] == pytest.approx(100 * 60 / 310, abs=0.01)


def test_drift_needs_three_samples() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        soak.drift([1.0, 2.0])


def test_a_clean_run_passes() -> None:
    assert soak.problems(_report(), max_drift_mb=20, max_drift_pct=10) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"unexpected": 1}, "unexpected status"),
        ({"requests": 0}, "no request"),
        ({"processes_stable": False}, "restarted"),
        (
            {
                "rss_drift": {
                    "workers_total": soak.drift([100 * MB] * 3 + [100 * MB] * 3 + [140 * MB] * 3)
                }
            },
            "workers_total RSS grew 40.0 MB",
        ),
    ],
)
def test_each_problem_fails_the_run(changes: dict[str, Any], expected: str) -> None:
    (found,) = soak.problems(_report(**changes), max_drift_mb=20, max_drift_pct=10)
    assert expected in found


def test_drift_must_pass_both_limits_to_fail() -> None:
    # 30 MB on 1000 MB is 3 %: above the MB limit only. 5 MB on 20 MB is 25 %: above the % only.
    big = soak.drift([1000 * MB] * 6 + [1030 * MB] * 3)
    small = soak.drift([20 * MB] * 6 + [25 * MB] * 3)
    report = _report(rss_drift={"model_server": big, "workers_total": small})
    assert soak.problems(report, max_drift_mb=20, max_drift_pct=10) == []


def test_default_sampling_is_bounded() -> None:
    assert soak.default_sampling(120.0) == (2.0, 12.0)
    assert soak.default_sampling(6.0) == (0.5, pytest.approx(0.6))  # at most twice a second
