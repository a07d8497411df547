"""The ceiling: time ``model.predict_on_batch`` in one process (no HTTP); write JSON results."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from keras_model import LoadedModel, load_model

WARM_CALLS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the model, precision, batch sizes and time budget."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="'vgg16' or a .keras file")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--batches", default="1,4,8,16", help="comma-separated batch sizes")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per batch size")
    parser.add_argument("--max-calls", type=int, default=10_000, help="calls per batch size")
    parser.add_argument("--min-calls", type=int, default=3, help="calls even past the duration")
    parser.add_argument("--output", help="write the JSON here instead of stdout")
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) by linear interpolation."""
    return float(np.percentile(np.asarray(values), q))


def time_batch(model: LoadedModel, batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Call the model on one prepared batch repeatedly; return throughput and latencies."""
    height, width = model.input_size
    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)
    inputs = model.prepare(images)
    for _ in range(WARM_CALLS):
        model.keras_model.predict_on_batch(inputs)
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + args.duration
    while len(latencies) < args.max_calls:
        if len(latencies) >= args.min_calls and time.perf_counter() >= deadline:
            break
        before = time.perf_counter()
        model.keras_model.predict_on_batch(inputs)
        latencies.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    return {
        "batch": batch,
        "calls": len(latencies),
        "seconds": round(elapsed, 4),
        "images_per_s": round(batch * len(latencies) / elapsed, 3),
        "latency_ms_mean": round(1000 * statistics.fmean(latencies), 3),
        "latency_ms_p50": round(1000 * percentile(latencies, 50), 3),
        "latency_ms_p95": round(1000 * percentile(latencies, 95), 3),
        "latency_ms_p99": round(1000 * percentile(latencies, 99), 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Load the model, time every batch size, print one JSON object on stdout."""
    args = parse_args(argv)
    started = time.perf_counter()
    model = load_model(args.model, args.precision)
    model.warm_up()
    load_s = time.perf_counter() - started
    batches = [int(text) for text in args.batches.split(",") if text]
    results = [time_batch(model, batch, args) for batch in batches]
    memory = psutil.Process().memory_full_info()
    report = {
        "model": args.model,
        "precision": args.precision,
        "load_s": round(load_s, 2),
        "rss_bytes": memory.rss,
        "pss_bytes": getattr(memory, "pss", memory.rss),
        "uss_bytes": getattr(memory, "uss", memory.rss),
        "batches": results,
    }
    text = json.dumps(report)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
