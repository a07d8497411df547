"""Dead workers' metric files fold into one archive per kind: totals unchanged, files gone."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from onemodel.web.metrics import fold_dead_worker
from tests.support.processes import PYTHON, ROOT, base_env

_WORKER = """
import os, sys
from onemodel.web.metrics import WebMetrics
metrics = WebMetrics()
for _ in range(int(sys.argv[1])):
    metrics.observe_request("/predict", "POST", 200, 0.02)
metrics.errors.labels("invalid_image").inc()
print(os.getpid())
"""


def _run_worker(directory: Path, requests: int) -> int:
    done = subprocess.run(
        [PYTHON, "-c", _WORKER, str(requests)],
        env=base_env(PROMETHEUS_MULTIPROC_DIR=str(directory)),
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout)


def _exposition(directory: Path) -> list[str]:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return sorted(
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("onemodel_")
    )


def test_folding_keeps_every_total_and_removes_the_dead_files(tmp_path: Path) -> None:
    pids = [_run_worker(tmp_path, 3), _run_worker(tmp_path, 5)]
    before = _exposition(tmp_path)
    assert 'onemodel_http_requests_total{method="POST",route="/predict",status="200"} 8.0' in before
    for pid in pids:
        fold_dead_worker(pid, str(tmp_path))
    assert _exposition(tmp_path) == before
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["counter_archive.db", "histogram_archive.db"]
    later = _run_worker(tmp_path, 1)  # a new worker adds to the archived totals
    fold_dead_worker(later, str(tmp_path))
    assert 'onemodel_http_requests_total{method="POST",route="/predict",status="200"} 9.0' in (
        _exposition(tmp_path)
    )
