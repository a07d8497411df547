"""A model server SIGTERMed with HTTP requests queued in it answers every one of them 200.

Real Gunicorn (2 workers x 4 threads) in front of one external model server (the fake NumPy
model, 0.5 s per batch of at most 8, so requests wait in its queue).
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from onemodel.boundary.client import ModelClient
from onemodel.settings import parse_address
from tests.support.load import Outcome, send_once
from tests.support.processes import free_port, new_authkey, wait_until
from tests.support.web import record_figures, start_fake_model_server, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 8


def _jpeg() -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.full((32, 32, 3), 90, dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def test_sigterm_with_requests_queued_answers_all_of_them_200(tmp_path: Path) -> None:
    key, address = new_authkey(), f"127.0.0.1:{free_port()}"
    fake = start_fake_model_server(
        address, key, tmp_path / "fake.log", "--delay-s", "0.5", "--max-queue", "64"
    )
    web = start_web(
        tmp_path,
        {"MODEL_SERVER_ADDRESS": address, "MODEL_SERVER_AUTHKEY": key, "REQUEST_TIMEOUT_S": "20"},
        workers=2,
        threads=4,
    )
    probe = ModelClient(parse_address(address), key.encode())
    data = _jpeg()

    def send(_: int) -> Outcome:
        return send_once(
            lambda session: session.post(
                web.url("/predict"), files={"file": ("x.jpg", data, "image/jpeg")}, timeout=30
            ),
            requests.Session(),
        )

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(send, index) for index in range(CLIENTS)]

            def in_server() -> int | None:
                # Images the fake model started on plus those waiting in its queue.
                info = probe.info()
                queued = info.queued_images
                return queued if sum(info.extra["model_calls"]) + queued >= CLIENTS else None

            queued = wait_until(in_server, 15.0, "every request in the model server")
            term_at = time.monotonic()
            fake.signal(signal.SIGTERM)
            outcomes = [future.result(60) for future in futures]
        code = fake.process.wait(30)
    finally:
        web.stop()
        fake.stop()
    figures = {
        "requests": len(outcomes),
        "queued_at_sigterm": queued,
        "statuses": [outcome.status for outcome in outcomes],
        "answered_after_sigterm": sum(outcome.finished_s > term_at for outcome in outcomes),
        "model_server_exit_code": code,
    }
    record_figures("pool", "sigterm_queued_single_server", figures)
    assert [outcome.status for outcome in outcomes] == [200] * CLIENTS, figures
    assert queued >= 1 and figures["answered_after_sigterm"] >= queued, figures
    assert code == 0, figures
