"""An engine's in-process ceiling, driven round by round: the model exactly as onemodel serves it.

``python engine_ceiling.py --batches 1,8`` loads the model the environment names
(MODEL_PATH, MODEL_ENGINE, MODEL_PRECISION, MODEL_CACHE_DIR, ...) through the model
server's own ``load_for_serving``: the same Keras model, or the same cached, verified and
compiled OpenVINO model, with the same precision hint. It warms every batch size, prints
one JSON line describing what it loaded, then answers one JSON line per command read on
stdin, until stdin closes:

    {"batch": 8, "duration_s": 2.0, "min_calls": 2}  ->  {"batch": 8, "calls": .., "seconds": ..,
                                                          "latencies_ms": [...]}

so the benchmark can interleave several engines, each in its own process, in rounds: a
change in the machine's load then hits every engine alike. No HTTP, no batcher: a
preprocessed batch straight into ``engine.predict``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import IO, Any

import numpy as np

WARM_CALLS = 2
_SHORT = {"float32": "f32", "bfloat16": "bf16"}  # OpenVINO's names, for TensorFlow's policy
MAX_CALLS = 10_000


def main(argv: list[str] | None = None) -> int:
    """Load, warm up, describe, then time batches on request."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,8", help="batch sizes to warm up")
    args = parser.parse_args(argv)
    # Replies go to the stdout the parent reads; everything else (Keras, OpenVINO and the
    # loading logs) to stderr, the log file.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    from onemodel.errors import OneModelError  # noqa: PLC0415
    from onemodel.logconfig import configure_logging  # noqa: PLC0415
    from onemodel.model_server.loading import load_for_serving  # noqa: PLC0415
    from onemodel.model_server.preprocessing import preprocess  # noqa: PLC0415
    from onemodel.settings import Settings  # noqa: PLC0415

    configure_logging()
    started = time.perf_counter()
    try:
        classifier = load_for_serving(Settings.from_env())
    except OneModelError as error:  # refused (say, int8 below its agreement bar): say why
        print(f"engine_ceiling: {error.message}", file=sys.stderr, flush=True)
        return 3
    load_s = time.perf_counter() - started
    height, width = classifier.input_size
    inputs: dict[int, np.ndarray] = {}
    for batch in [int(text) for text in args.batches.split(",") if text]:
        images = np.random.default_rng(batch).integers(0, 256, (batch, height, width, 3))
        inputs[batch] = preprocess(images.astype(np.uint8), classifier.preprocess_mode)
        for _ in range(WARM_CALLS):
            classifier.engine.predict(inputs[batch])
    engine = classifier.engine
    agreement = classifier.agreement
    _send(
        replies,
        {
            "ready": True,
            "model": classifier.name,
            "engine": engine.name,
            "precision": classifier.precision,
            # What the hardware really computes in: OpenVINO's own report; TensorFlow's
            # policy (its bfloat16 on a CPU without bf16 units is emulated).
            "inference_precision": getattr(
                engine, "inference_precision", _SHORT.get(classifier.precision, "")
            ),
            "engine_reason": classifier.engine_reason,
            "agreement": None if agreement is None else dataclasses.asdict(agreement),
            "model_cache": classifier.cache,
            "load_s": round(load_s, 2),
            "pid": os.getpid(),
        },
    )
    for line in sys.stdin:
        command = json.loads(line)
        batch = int(command["batch"])
        if batch not in inputs:
            images = np.random.default_rng(batch).integers(0, 256, (batch, height, width, 3))
            inputs[batch] = preprocess(images.astype(np.uint8), classifier.preprocess_mode)
            engine.predict(inputs[batch])
        _send(replies, time_batch(engine, inputs[batch], command))
    return 0


def time_batch(engine: Any, batch: np.ndarray, command: dict[str, Any]) -> dict[str, Any]:
    """Call the engine on one batch for duration_s (at least min_calls times); return timings."""
    duration_s = float(command["duration_s"])
    min_calls = int(command.get("min_calls", 2))
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + duration_s
    while len(latencies) < MAX_CALLS:
        if len(latencies) >= min_calls and time.perf_counter() >= deadline:
            break
        before = time.perf_counter()
        engine.predict(batch)
        latencies.append(time.perf_counter() - before)
    return {
        "batch": len(batch),
        "calls": len(latencies),
        "seconds": round(time.perf_counter() - started, 4),
        "latencies_ms": [round(1000 * value, 3) for value in latencies],
    }


def _send(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")


if __name__ == "__main__":
    sys.exit(main())
