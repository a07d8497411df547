"""Metric files over real Gunicorn: a killed worker's files fold into the archive (its counts
stay), and the temporary metrics directory does not outlive the service."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.processes import free_port, new_authkey, wait_until
from tests.support.web import start_fake_model_server, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _requests_total(base_url: str) -> float:
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('onemodel_http_requests_total{method="GET",route="/healthz"')
    )


def test_dead_workers_fold_and_no_directory_is_left(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    address, key = f"127.0.0.1:{free_port()}", new_authkey()
    fake = start_fake_model_server(address, key, tmp_path / "fake.log")
    web = start_web(
        tmp_path,
        {"MODEL_SERVER_ADDRESS": address, "MODEL_SERVER_AUTHKEY": key, "TMPDIR": str(temporary)},
        workers=2,
        threads=2,
    )
    try:
        directories = list(temporary.glob("onemodel-metrics-*"))
        assert len(directories) == 1
        metrics_dir = directories[0]
        for _ in range(20):
            assert requests.get(web.url("/healthz"), timeout=5).status_code == 200
        before = _requests_total(web.base_url)
        assert before >= 20
        served = Counter(line.pid for line in web.access_lines() if line.path == "/healthz")
        victim, victim_served = served.most_common(1)[0]
        assert victim_served >= 1
        assert (metrics_dir / f"counter_{victim}.db").exists()
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: victim not in web.worker_pids() and len(web.worker_pids()) == 2,
            30,
            "a new worker",
        )
        wait_until(lambda: not (metrics_dir / f"counter_{victim}.db").exists(), 10, "the fold")
        assert (metrics_dir / "counter_archive.db").exists()
        # Its counts stay (scrapes count under /metrics, not /healthz).
        assert _requests_total(web.base_url) == before
    finally:
        web.stop()
        fake.stop()
    assert (
        not psutil.pid_exists(web.gunicorn.pid)
        or psutil.Process(web.gunicorn.pid).status() == "zombie"
    )
    assert list(temporary.glob("onemodel-metrics-*")) == []
