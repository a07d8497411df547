"""A real manager server (ModelService + Batcher) around a NumPy fake model: no TensorFlow.

Run: python fake_model_server.py ADDRESS [--height H --width W --classes N --delay-s S]
with the authkey in MODEL_SERVER_AUTHKEY. It serves until SIGTERM, then drains like the
real one (every accepted prediction answered) and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time

import numpy as np

from onemodel.boundary.contract import ModelInfo
from onemodel.boundary.server import create_server
from onemodel.logconfig import configure_logging
from onemodel.model_server.batcher import Batcher
from onemodel.model_server.service import ModelService
from onemodel.settings import parse_address


def main() -> None:
    """Serve the fake model until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--height", type=int, default=8)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--drain-timeout-s", type=float, default=25.0)
    args = parser.parse_args()
    configure_logging()
    calls: list[int] = []
    # The mean pixel value of each image of each call: tests tell requests apart by it.
    call_means: list[list[int]] = []

    def predict(images: np.ndarray) -> np.ndarray:
        calls.append(images.shape[0])
        call_means.append([round(float(image.mean())) for image in images])
        if args.delay_s:
            time.sleep(args.delay_s)
        means = images.reshape(images.shape[0], -1).mean(axis=1, dtype=np.float64)
        logits = np.stack([np.cos(means / 40.0 + k) for k in range(args.classes)], axis=1)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    batcher = Batcher(predict, max_batch_size=8, max_delay_ms=0, max_queue=args.max_queue)
    service = ModelService(
        describe=lambda: {"model_calls": list(calls), "model_call_means": list(call_means)}
    )
    server = create_server(
        service, parse_address(args.address), os.environ["MODEL_SERVER_AUTHKEY"].encode()
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    batcher.start()
    service.set_ready(
        batcher,
        ModelInfo(
            state="ready",
            name="fake",
            version="1",
            input_size=(args.height, args.width),
            labels=tuple(f"class_{index}" for index in range(args.classes)),
            max_batch_size=8,
            max_queue=args.max_queue,
        ),
    )
    print("ready", flush=True)
    stop.wait()
    if service.drain(args.drain_timeout_s):
        logging.getLogger("fake_model_server").info(
            "stopping: every accepted prediction was answered"
        )


if __name__ == "__main__":
    main()
