"""Faults under load: the model server killed or hung, a worker killed, shutdown, overload.

Real Gunicorn (2 workers) and a real model server with the tiny model (or the NumPy fake
model server where a model must be slow on purpose). Every load is bounded in time and count
and goes to 127.0.0.1 only. Measured figures are printed and merged into
tests/artifacts/faults.json.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import requests

from onemodel.boundary.client import REPLY_GRACE_S
from onemodel.boundary.transport import HANDSHAKE_TIMEOUT_S
from tests.support.load import Load, Outcome, Send, percentile, send_once
from tests.support.processes import ROOT, free_port, new_authkey, wait_until
from tests.support.web import (
    WebDeployment,
    record_figures,
    start_fake_model_server,
    start_web,
    wait_for_pids,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INFLIGHT_CONFIG = ROOT / "tests" / "e2e" / "inflight.gunicorn.conf.py"
REQUEST_TIMEOUT_S = 2.0
# The longest any request may take while the model server is hung: an established
# connection waits REQUEST_TIMEOUT_S + REPLY_GRACE_S for its reply (then 504), a new one
# waits HANDSHAKE_TIMEOUT_S for the handshake (then 503); plus scheduling slack.
HANG_BOUND_S = max(REQUEST_TIMEOUT_S + REPLY_GRACE_S, HANDSHAKE_TIMEOUT_S) + 1.0


@pytest.fixture(scope="module")
def small_jpeg(photo_rgb: np.ndarray) -> bytes:
    """The real photo at 160x120: cheap to decode, so the load measures the service."""
    small = cv2.resize(photo_rgb, (160, 120), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="module")
def embedded(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDeployment]:
    """2 workers x 4 threads; the master starts the private model server (tiny model)."""
    deployment = start_web(
        tmp_path_factory.mktemp("faults"),
        {"MODEL_PATH": str(tiny_model), "REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S)},
        workers=2,
        threads=4,
    )
    yield deployment
    deployment.stop()


def _poster(deployment: WebDeployment, data: bytes, timeout_s: float = 15.0) -> Send:
    url = deployment.url("/predict")

    def send(session: requests.Session) -> requests.Response:
        return session.post(
            url, files={"file": ("photo.jpg", data, "image/jpeg")}, timeout=timeout_s
        )

    return send


def _count_200(outcomes: list[Outcome]) -> int:
    return sum(outcome.status == 200 for outcome in outcomes)


def _every_worker_answers(
    deployment: WebDeployment, data: bytes, timeout_s: float = 30.0
) -> set[int]:
    """Send fresh-connection requests in parallel until every worker has answered one with 200."""
    workers = deployment.worker_pids()
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    send = _poster(deployment, data)
    with ThreadPoolExecutor(8) as pool:
        while seen != workers and time.monotonic() < deadline:
            outcomes = list(pool.map(lambda _: send_once(send, requests.Session()), range(8)))
            assert [outcome.status for outcome in outcomes] == [200] * 8, outcomes
            ids = {outcome.request_id for outcome in outcomes if outcome.request_id}
            seen |= set(wait_for_pids(deployment, ids).values())
    return seen


def test_model_server_killed_under_load(embedded: WebDeployment, small_jpeg: bytes) -> None:
    before = embedded.wait_ready()
    old_server = psutil.Process(before["pid"])
    workers = embedded.worker_pids()
    load = Load(
        _poster(embedded, small_jpeg),
        clients=8,
        max_duration_s=90,
        max_requests=30_000,
        pause_after_failure_s=0.02,
    )
    with load:
        assert load.wait_for(lambda outcomes: _count_200(outcomes) >= 40, 30), load.outcomes()[-5:]
        old_server.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()  # after the signal: nothing sent later can reach the old one
        recovered = load.wait_for(
            lambda outcomes: any(o.status == 200 and o.started_s > killed_at for o in outcomes), 60
        )
        recovered_at = time.monotonic()
        load.wait_for(lambda _: time.monotonic() > recovered_at + 1.0, 5)  # and a moment more
        ended_at = time.monotonic()
    outcomes = load.stop()
    assert recovered, "no 200 within 60 s of the kill"

    after_kill = [o for o in outcomes if o.started_s >= killed_at]
    outage = [o for o in after_kill if o.status != 200]
    first_200_s = min(o.finished_s for o in after_kill if o.status == 200) - killed_at
    unexpected = [o for o in outcomes if o.status not in (200, 503)]
    figures = {
        "clients": 8,
        "requests": len(outcomes),
        "kill_to_first_200_s": round(first_200_s, 3),
        "answers_503": len(outage),
        "not_200_or_503": len(unexpected),
        "max_latency_not_200_s": round(max((o.latency_s for o in outage), default=0.0), 3),
        "max_latency_any_s": round(max(o.latency_s for o in outcomes), 3),
        "load_s": round(ended_at - killed_at, 3),
    }
    record_figures("faults", "model_server_killed", figures)
    assert not unexpected, (figures, unexpected[:5])
    assert outage, f"the kill caused no outage at all: {figures}"
    # The first death after a healthy run is restarted at once (later ones back off).
    assert "the model server died; restarting it in 0.0 s" in embedded.gunicorn.log()
    assert all(o.code == "model_unavailable" and o.retry_after == "1" for o in outage), outage[:5]
    assert figures["max_latency_not_200_s"] < 1.0, figures
    assert figures["max_latency_any_s"] < REQUEST_TIMEOUT_S + REPLY_GRACE_S, figures  # no hang

    # The master restarted the model server (its child, loaded once); no worker restarted.
    after = embedded.wait_ready()
    embedded.model_server()  # remember the new one for teardown
    assert after["pid"] != before["pid"]
    assert after["load_count"] == 1
    assert psutil.Process(after["pid"]).ppid() == embedded.gunicorn.pid
    assert "the model server died; restarting it" in embedded.gunicorn.log()
    assert embedded.worker_pids() == workers
    # Each worker reconnected by itself: both answer 200 without being restarted.
    assert _every_worker_answers(embedded, small_jpeg) == workers


def _pending_signals(pid: int) -> int:
    """Return the bit mask of signals pending for the process (thread-group wide)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no ShdPnd line for {pid}")


def test_model_server_hung_answers_are_bounded(embedded: WebDeployment, small_jpeg: bytes) -> None:
    hang_s = 8.0  # longer than both waits together, so both kinds of answer show up
    before = embedded.wait_ready()
    server = psutil.Process(before["pid"])
    workers = embedded.worker_pids()
    health: list[tuple[int, float]] = []
    ready: list[tuple[int, float, str]] = []
    # 3 clients plus one probe at a time fit in one worker's 4 threads: no request waits in
    # Gunicorn's queue behind a thread that is itself waiting on the hung model server.
    load = Load(
        _poster(embedded, small_jpeg),
        clients=3,
        max_duration_s=60,
        max_requests=30_000,
        pause_after_failure_s=0.02,
    )
    with load:
        assert load.wait_for(lambda outcomes: _count_200(outcomes) >= 20, 30)
        stopped_at = time.monotonic()
        server.suspend()  # SIGSTOP: alive, accepts connections into its backlog, answers nothing
        try:
            while time.monotonic() < stopped_at + hang_s:
                started = time.monotonic()
                response = requests.get(embedded.url("/healthz"), timeout=10)
                health.append((response.status_code, time.monotonic() - started))
                if len(ready) < 2 and time.monotonic() > stopped_at + 1.0:
                    started = time.monotonic()
                    response = requests.get(embedded.url("/readyz"), timeout=15)
                    ready.append((response.status_code, time.monotonic() - started, response.text))
                time.sleep(0.25)
        finally:
            server.resume()
        resumed_at = time.monotonic()
        load.wait_for(
            lambda outcomes: any(o.status == 200 and o.started_s > resumed_at for o in outcomes), 10
        )
        load.wait_for(lambda _: time.monotonic() > resumed_at + 0.5, 5)
    outcomes = load.stop()

    hung = [o for o in outcomes if o.started_s > stopped_at and o.finished_s < resumed_at]
    timeouts = [o for o in outcomes if o.status == 504]
    refused = [o for o in outcomes if o.status == 503]
    first_200 = [o.finished_s for o in outcomes if o.status == 200 and o.started_s > resumed_at]
    figures = {
        "request_timeout_s": REQUEST_TIMEOUT_S,
        "hang_s": hang_s,
        "answers_504": len(timeouts),
        "latency_504_s": [
            round(min(o.latency_s for o in timeouts), 3),
            round(max(o.latency_s for o in timeouts), 3),
        ]
        if timeouts
        else None,
        "answers_503": len(refused),
        "latency_503_max_s": round(max(o.latency_s for o in refused), 3) if refused else None,
        "max_latency_any_s": round(max(o.latency_s for o in outcomes), 3),
        "healthz_max_s": round(max(latency for _, latency in health), 3),
        "readyz_during_hang": [(status, round(latency, 3)) for status, latency, _ in ready],
        "resume_to_first_200_s": round(min(first_200) - resumed_at, 3) if first_200 else None,
        "bound_s": HANG_BOUND_S,
    }
    record_figures("faults", "model_server_hung", figures)
    assert all(o.status in (200, 503, 504) for o in outcomes), [
        o for o in outcomes if o.status not in (200, 503, 504)
    ][:5]
    assert hung and all(o.status in (503, 504) for o in hung), figures
    # An established connection times out with 504; a new one cannot finish its handshake: 503.
    assert timeouts and all(o.code == "timeout" for o in timeouts), figures
    assert refused and all(
        o.code == "model_unavailable" and o.retry_after == "1" for o in refused
    ), figures
    assert figures["max_latency_any_s"] < HANG_BOUND_S, figures  # nothing hangs with the server
    # The workers stay usable: liveness answers at once; readiness says "not ready".
    assert all(status == 200 for status, _ in health) and figures["healthz_max_s"] < 1.0, figures
    assert ready and all(status == 503 for status, _, _ in ready), ready
    assert all('"ready":false' in text.replace(" ", "") for _, _, text in ready), ready
    # After SIGCONT: the same model server and workers serve again at once, nothing restarted.
    assert (
        figures["resume_to_first_200_s"] is not None and figures["resume_to_first_200_s"] < 2.0
    ), figures
    after = embedded.readyz()
    assert (after["pid"], after["load_count"], after["instance"]) == (
        before["pid"],
        1,
        before["instance"],
    )
    assert embedded.worker_pids() == workers


def test_worker_killed_the_other_keeps_serving(embedded: WebDeployment, small_jpeg: bytes) -> None:
    server_before = embedded.wait_ready()
    workers = embedded.worker_pids()
    victim = min(workers)
    survivor = max(workers)
    load = Load(
        _poster(embedded, small_jpeg),
        clients=6,
        max_duration_s=60,
        max_requests=30_000,
        fresh_connections=True,
    )
    with load:
        assert load.wait_for(lambda outcomes: _count_200(outcomes) >= 30, 30)
        killed_at = time.monotonic()
        psutil.Process(victim).send_signal(signal.SIGKILL)
        replacement = wait_until(
            lambda: (embedded.worker_pids() - workers) or None, 30, "a replacement worker"
        )
        (new_worker,) = replacement
        # Keep the load on until the new worker has answered requests itself.
        served_by_new = load.wait_for(
            lambda outcomes: (
                new_worker in {line.pid for line in embedded.access_lines() if line.status == 200}
            ),
            30,
        )
        load.wait_for(lambda _: time.monotonic() > killed_at + 2.0, 5)  # a while on two workers
        ended_at = time.monotonic()
    outcomes = load.stop()

    failed = [o for o in outcomes if o.status != 200]
    after_kill = [o for o in outcomes if o.started_s > killed_at + 0.05]
    completions = sorted(
        o.finished_s for o in outcomes if o.status == 200 and o.finished_s > killed_at
    )
    gaps = np.diff([killed_at, *completions, ended_at])
    figures = {
        "requests": len(outcomes),
        "failed": len(failed),
        "failed_kinds": sorted({o.error or str(o.status) for o in failed}),
        "longest_gap_between_200s_s": round(float(gaps.max()), 3),
        "replacement_after_s": None,
    }
    first_by_new = [
        o.finished_s
        for o in outcomes
        if o.request_id and embedded.pids_by_request_id().get(o.request_id) == new_worker
    ]
    if first_by_new:
        figures["replacement_after_s"] = round(min(first_by_new) - killed_at, 3)
    record_figures("faults", "worker_killed", figures)
    # Only requests the dead worker held can fail; everything sent after the kill succeeds.
    assert len(failed) <= 6 and all(o.started_s <= killed_at + 0.05 for o in failed), figures
    assert after_kill and all(o.status == 200 for o in after_kill), figures
    assert figures["longest_gap_between_200s_s"] < 1.0, figures  # the survivor kept serving
    assert served_by_new, "the replacement worker never answered"
    assert embedded.worker_pids() == {survivor, new_worker}
    # The model server was not disturbed.
    after = embedded.readyz()
    assert (after["pid"], after["load_count"]) == (server_before["pid"], 1)


def _inflight_request(url: str, data: bytes, request_id: str) -> Outcome:
    def send(session: requests.Session) -> requests.Response:
        return session.post(
            url,
            files={"file": ("photo.jpg", data, "image/jpeg")},
            headers={"X-Request-ID": request_id},
            timeout=30,
        )

    with requests.Session() as session:
        return send_once(send, session)


def _start_in_flight(
    deployment: WebDeployment, data: bytes, markers: Path, pool: ThreadPoolExecutor, count: int
) -> list[Future[Outcome]]:
    ids = [f"graceful_{index}" for index in range(count)]
    futures = [pool.submit(_inflight_request, deployment.url("/predict"), data, rid) for rid in ids]
    wait_until(
        lambda: all((markers / rid).exists() for rid in ids), 15, "every request in a worker"
    )
    return futures


def test_graceful_shutdown_external_model_server(tmp_path: Path, small_jpeg: bytes) -> None:
    key, address = new_authkey(), f"127.0.0.1:{free_port()}"
    # Each model call takes 1 s: the first request runs alone, the next three wait for it.
    fake = start_fake_model_server(address, key, tmp_path / "fake.log", "--delay-s", "1.0")
    markers = tmp_path / "inflight"
    markers.mkdir()
    graceful_timeout_s = 10
    web = start_web(
        tmp_path,
        {
            "MODEL_SERVER_ADDRESS": address,
            "MODEL_SERVER_AUTHKEY": key,
            "ONEMODEL_INFLIGHT_DIR": str(markers),
            "GUNICORN_GRACEFUL_TIMEOUT": str(graceful_timeout_s),
            "REQUEST_TIMEOUT_S": "10",
        },
        config=INFLIGHT_CONFIG,
    )
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = _start_in_flight(web, small_jpeg, markers, pool, 4)
            term_at = time.monotonic()
            web.gunicorn.signal(signal.SIGTERM)
            outcomes = [future.result() for future in futures]
        code = web.gunicorn.process.wait(graceful_timeout_s + 10)
        exit_s = time.monotonic() - term_at
    finally:
        web.stop()
        fake.stop()
    figures = {
        "in_flight": len(outcomes),
        "statuses": [o.status for o in outcomes],
        "finished_after_sigterm_s": [round(o.finished_s - term_at, 3) for o in outcomes],
        "master_exit_code": code,
        "master_exit_s": round(exit_s, 3),
    }
    record_figures("faults", "graceful_shutdown_external", figures)
    assert [o.status for o in outcomes] == [200] * 4, figures
    # They really were in flight: each answer came after the SIGTERM.
    assert all(o.finished_s > term_at for o in outcomes), figures
    assert code == 0 and exit_s < graceful_timeout_s, figures


def test_graceful_shutdown_embedded_stops_the_model_server_last(
    tiny_model: Path, tmp_path: Path, small_jpeg: bytes
) -> None:
    markers = tmp_path / "inflight"
    markers.mkdir()
    graceful_timeout_s = 10
    web = start_web(
        tmp_path,
        {
            "MODEL_PATH": str(tiny_model),
            "ONEMODEL_INFLIGHT_DIR": str(markers),
            "GUNICORN_GRACEFUL_TIMEOUT": str(graceful_timeout_s),
            "REQUEST_TIMEOUT_S": "10",
        },
        config=INFLIGHT_CONFIG,
    )
    server = web.model_server()
    assert server is not None
    private_directory = Path(server.environ()["MODEL_SERVER_ADDRESS"]).parent
    workers = web.worker_pids()
    sigterm_bit = 1 << (signal.SIGTERM - 1)
    pending_while_draining: list[bool] = []
    try:
        # The tiny model answers in milliseconds: pause it so that requests stay in flight
        # (under HANDSHAKE_TIMEOUT_S, so even a thread that must connect afresh gets through).
        server.suspend()
        try:
            with ThreadPoolExecutor(4) as pool:
                futures = _start_in_flight(web, small_jpeg, markers, pool, 4)
                term_at = time.monotonic()
                web.gunicorn.signal(signal.SIGTERM)
                # The workers drain their requests; the master must not stop the model yet.
                while time.monotonic() < term_at + 1.0:
                    pending_while_draining.append(bool(_pending_signals(server.pid) & sigterm_bit))
                    time.sleep(0.1)
                server.resume()
                outcomes = [future.result() for future in futures]
        finally:
            server.resume()
        code = web.gunicorn.process.wait(graceful_timeout_s + 20)
        exit_s = time.monotonic() - term_at
        log = web.gunicorn.log()
    finally:
        web.stop()
    worker_exits = [log.find(f"Worker exiting (pid: {pid})") for pid in workers]
    stopping = log.find("stopping the model server")
    server_stops = log.find("stopping: finishing the running batch")
    figures = {
        "statuses": [o.status for o in outcomes],
        "master_exit_code": code,
        "master_exit_s": round(exit_s, 3),
        "model_server_signalled_while_workers_drained": any(pending_while_draining),
        "log_order_ok": -1 not in worker_exits and max(worker_exits) < stopping < server_stops,
    }
    record_figures("faults", "graceful_shutdown_embedded", figures)
    assert [o.status for o in outcomes] == [200] * 4, (figures, log[-3000:])
    assert all(o.finished_s > term_at for o in outcomes), figures
    assert code == 0 and exit_s < graceful_timeout_s + 5, figures
    assert pending_while_draining and not any(pending_while_draining), figures
    assert figures["log_order_ok"], log[-4000:]
    assert not server.is_running()
    assert not private_directory.exists()  # the socket and the authkey file are gone


def test_overload_refuses_fast_and_keeps_admitted_latency_bounded(
    tmp_path: Path, small_jpeg: bytes
) -> None:
    delay_s, max_queue, max_batch = 0.2, 4, 8  # the fake server's batcher: 8 images per call
    key, address = new_authkey(), f"127.0.0.1:{free_port()}"
    fake = start_fake_model_server(
        address,
        key,
        tmp_path / "fake.log",
        "--delay-s",
        str(delay_s),
        "--max-queue",
        str(max_queue),
    )
    # 16 threads: more requests reach the model server than its batch plus queue can hold.
    web = start_web(
        tmp_path,
        {"MODEL_SERVER_ADDRESS": address, "MODEL_SERVER_AUTHKEY": key, "REQUEST_TIMEOUT_S": "10"},
        workers=2,
        threads=8,
    )
    try:
        send = _poster(web, small_jpeg)
        for _ in range(5):
            assert send_once(send, requests.Session()).status == 200
        fake_process = psutil.Process(fake.pid)
        workers = [psutil.Process(pid) for pid in web.worker_pids()]
        rss_before = fake_process.memory_info().rss
        workers_before = sum(worker.memory_info().rss for worker in workers)
        load = Load(send, clients=32, max_duration_s=5.0, max_requests=50_000)
        with load:
            load.wait_for(lambda _: False, 5.5)
        outcomes = load.stop()
        ended_at = time.monotonic()
        after_load = send_once(send, requests.Session())
        rss_after = fake_process.memory_info().rss
        workers_after = sum(worker.memory_info().rss for worker in workers)
    finally:
        web.stop()
        fake.stop()
    admitted = [o.latency_s for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 503]
    # An admitted request waits at most for the running call and the calls its queue needs.
    admitted_bound_s = (math.ceil(max_queue / max_batch) + 1) * delay_s + 0.6
    figures = {
        "clients": 32,
        "duration_s": 5.0,
        "answers_200": len(admitted),
        "answers_503": len(refused),
        "other": len(outcomes) - len(admitted) - len(refused),
        "p50_503_s": round(percentile((o.latency_s for o in refused), 0.5), 4),
        "p95_503_s": round(percentile((o.latency_s for o in refused), 0.95), 4),
        "p50_200_s": round(percentile(admitted, 0.5), 4),
        "p95_200_s": round(percentile(admitted, 0.95), 4),
        "max_200_s": round(max(admitted), 4),
        "admitted_bound_s": round(admitted_bound_s, 3),
        "model_server_rss_mb": [round(rss_before / 2**20, 1), round(rss_after / 2**20, 1)],
        "workers_rss_mb": [round(workers_before / 2**20, 1), round(workers_after / 2**20, 1)],
        "after_load": [after_load.status, round(after_load.finished_s - ended_at, 3)],
    }
    record_figures("faults", "overload", figures)
    assert figures["other"] == 0, [o for o in outcomes if o.status not in (200, 503)][:5]
    assert len(refused) > len(admitted) > 0, figures  # well above capacity, and still serving
    assert all(o.code == "overloaded" and o.retry_after == "1" for o in refused), refused[:3]
    assert figures["p95_503_s"] < 0.5, figures
    assert figures["p95_200_s"] < admitted_bound_s, figures
    # The server kept its capacity: at least half of one full queue per model call.
    assert len(admitted) >= 0.5 * (5.0 / delay_s) * max_queue, figures
    assert rss_after - rss_before < 20 * 2**20, figures
    assert workers_after - workers_before < 40 * 2**20, figures
    assert after_load.status == 200 and after_load.latency_s < 1.0, figures
