"""SIGTERM drains a model server: queued and running predictions are answered, then exit 0.

A real manager server process (the fake NumPy model, 0.3 s per batch of at most 8, so
requests queue) with the model server's own shutdown path (``drain``).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from onemodel.boundary.client import ModelClient
from onemodel.errors import ModelServerStoppingError, OneModelError
from onemodel.settings import parse_address
from tests.support.processes import free_port, new_authkey, wait_until
from tests.support.web import start_fake_model_server

REQUESTS = 20  # three batches of 8, 8, 4: about 0.9 s of work queued at once


@pytest.mark.slow
def test_sigterm_answers_every_queued_prediction_then_exits_0(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    authkey = new_authkey()
    server = start_fake_model_server(
        address, authkey, tmp_path / "server.log", "--delay-s", "0.3", "--max-queue", "64"
    )
    client = ModelClient(parse_address(address), authkey.encode())
    results: list[np.ndarray | OneModelError] = []
    lock = threading.Lock()

    connected = threading.Barrier(REQUESTS + 1)

    def predict(value: int) -> None:
        images = np.full((1, 8, 8, 3), value, dtype=np.uint8)
        client.info()  # this thread's own connection, made before the burst
        connected.wait(30)
        try:
            scores: np.ndarray | OneModelError = client.predict(images, timeout_s=20.0)
        except OneModelError as error:
            scores = error
        with lock:
            results.append(scores)

    try:
        threads = [threading.Thread(target=predict, args=(value,)) for value in range(REQUESTS)]
        for thread in threads:
            thread.start()
        connected.wait(30)

        # Every request is in the server: one batch running, the rest queued behind it.
        def all_in_server() -> bool:
            # Images the fake model started on plus those waiting in its queue.
            info = client.info()
            return sum(info.extra["model_calls"]) + info.queued_images >= REQUESTS

        wait_until(all_in_server, 10.0, "every request in the server")
        assert client.info().queued_images > 0
        server.signal(signal.SIGTERM)
        stopping = wait_until(
            lambda: (info := client.info()).state == "stopping" and info, 5.0, "stopping"
        )
        assert stopping.ready is False
        with pytest.raises(ModelServerStoppingError) as refused:
            client.predict(np.zeros((1, 8, 8, 3), dtype=np.uint8), timeout_s=5.0)
        assert refused.value.status == 503
        for thread in threads:
            thread.join(20)
        assert server.process.wait(20) == 0
    finally:
        server.stop()
    errors = [result for result in results if isinstance(result, OneModelError)]
    assert not errors, errors
    assert len(results) == REQUESTS
    assert all(result.shape == (1, 4) for result in results)  # type: ignore[union-attr]
    assert "every accepted prediction was answered" in server.log()
