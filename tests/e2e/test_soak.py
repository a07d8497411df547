"""A short soak (scripts/soak.py, 20 s): mixed traffic, every status as expected, memory flat."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import PYTHON, ROOT, base_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_short_soak(tiny_model: Path, tmp_path: Path, artifacts_dir: Path) -> None:
    report_path = tmp_path / "soak.json"
    result = subprocess.run(
        [
            PYTHON,
            str(ROOT / "scripts" / "soak.py"),
            "--duration-s",
            "20",
            "--clients",
            "4",
            "--model",
            str(tiny_model),
            "--report",
            str(report_path),
        ],
        env=base_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert report_path.exists(), result.stderr[-3000:]
    shutil.copy(report_path, artifacts_dir / "soak-ci.json")
    report = json.loads(report_path.read_text())
    assert result.returncode == 0, (report["problems"], result.stderr[-3000:])
    assert report["passed"] and report["problems"] == []
    assert report["unexpected"] == 0 and report["requests"] > 500
    # Every kind of request ran and got only the status it must get.
    assert len(report["by_probe"]) == 18
    expected = {"200", "400", "404", "405", "413", "415"}
    assert {
        status for probe in report["by_probe"].values() for status in probe["statuses"]
    } == expected
    assert all(len(probe["statuses"]) == 1 for probe in report["by_probe"].values())
    assert report["processes_stable"]
    assert report["rss_samples"] >= 10
    assert set(report["rss_drift"]) == {"model_server", "workers_total"}
    assert report["tracebacks_in_log"] == 0
