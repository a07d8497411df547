"""Measure OpenVINO CPU execution modes on one converted model, interleaved in one process.

Compiles the same OpenVINO IR (``model.xml``, e.g. an entry of the model cache) several
ways and measures images per second in rounds, every configuration once per round, so
a noisy machine slows all of them alike; the figures are medians over rounds and each
configuration's median ratio to ``sync`` (what the model server does today):

  sync          INFERENCE_PRECISION_HINT only (OpenVINO's CPU default, LATENCY), one
                synchronous request: the model server's engine
  latency       PERFORMANCE_HINT=LATENCY spelled out
  threads1      LATENCY with INFERENCE_NUM_THREADS=1
  nopin         LATENCY with ENABLE_CPU_PINNING=False
  tput-split    THROUGHPUT, NUM_STREAMS=2: each batch split in two halves run at once on an
                AsyncInferQueue (what one batch in flight at a time could use)
  tput-2batch   THROUGHPUT, NUM_STREAMS=2: two whole batches in flight at once (only if
                the batcher ran two batches concurrently)
  sync-2batch   sync engine (one request per thread) with two batches in flight

Usage: python scripts/openvino_modes.py CACHE_ENTRY/model.xml [--batches 1 4 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import openvino as ov

Runner = Callable[[np.ndarray], None]


def _compile(core: Any, model: Any, config: dict[str, Any]) -> Any:
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", **config})


def _sync_runner(compiled: Any) -> Runner:
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> None:
        request.infer([batch])

    return run


def _split_runner(compiled: Any) -> Runner:
    queue = ov.AsyncInferQueue(compiled, 2)

    def run(batch: np.ndarray) -> None:
        if batch.shape[0] == 1:
            queue.start_async([batch])
        else:
            half = batch.shape[0] // 2
            queue.start_async([np.ascontiguousarray(batch[:half])])
            queue.start_async([np.ascontiguousarray(batch[half:])])
        queue.wait_all()

    return run


def _two_batch_runner(compiled: Any) -> Runner:
    """Run two copies of the batch at once, each on its own request and thread."""
    requests = [compiled.create_infer_request() for _ in range(2)]

    def run(batch: np.ndarray) -> None:
        threads = [threading.Thread(target=r.infer, args=([batch],)) for r in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return run


def _properties(compiled: Any) -> dict[str, str]:
    names = ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "ENABLE_CPU_PINNING")
    return {name: str(compiled.get_property(name)) for name in names}


def _measure(run: Runner, batch: np.ndarray, window_s: float, copies: int) -> float:
    run(batch)  # warm this shape
    count, started = 0, time.perf_counter()
    while True:
        run(batch)
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= window_s or count >= 10_000:
            return count * batch.shape[0] * copies / elapsed


def main() -> None:
    """Print and write (--out) a JSON table of img/s per configuration and batch size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xml")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=1.5)
    parser.add_argument("--configs", nargs="+", help="only these (sync is always run)")
    parser.add_argument("--out")
    args = parser.parse_args()
    core = ov.Core()
    model = core.read_model(args.xml)
    shape = model.input(0).get_partial_shape()
    height, width = shape[1].get_length(), shape[2].get_length()
    configs = {
        "sync": ({}, _sync_runner, 1),
        "latency": ({"PERFORMANCE_HINT": "LATENCY"}, _sync_runner, 1),
        "threads1": (
            {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1},
            _sync_runner,
            1,
        ),
        "nopin": ({"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}, _sync_runner, 1),
        "tput-split": ({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}, _split_runner, 1),
        "tput-2batch": (
            {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2},
            _two_batch_runner,
            2,
        ),
        "sync-2batch": ({}, _two_batch_runner, 2),
    }
    if args.configs:
        configs = {n: c for n, c in configs.items() if n == "sync" or n in args.configs}
    runners: dict[str, tuple[Runner, int]] = {}
    properties: dict[str, dict[str, str]] = {}
    for name, (config, make, copies) in configs.items():
        compiled = _compile(core, model, config)
        properties[name] = _properties(compiled)
        runners[name] = (make(compiled), copies)
    rng = np.random.default_rng(0)
    batches = {
        size: rng.uniform(0, 255, (size, height, width, 3)).astype(np.float32)
        for size in args.batches
    }
    rates: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in runners}
    loads = []
    for round_index in range(args.rounds):
        loads.append(os.getloadavg()[0])
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for size, batch in batches.items():
            for name in order:
                run, copies = runners[name]
                rates[name][size].append(_measure(run, batch, args.window_s, copies))
    table: dict[str, Any] = {}
    for name in runners:
        row: dict[str, Any] = {"properties": properties[name]}
        for size in batches:
            ratios = [r / s for r, s in zip(rates[name][size], rates["sync"][size], strict=True)]
            row[f"batch{size}"] = {
                "img_s": round(statistics.median(rates[name][size]), 1),
                "ratio": round(statistics.median(ratios), 2),
                "rounds": [round(r, 1) for r in rates[name][size]],
            }
        table[name] = row
    result = {"xml": args.xml, "load_average_1m": loads, "configs": table}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    for name, row in table.items():
        cells = "  ".join(
            f"b{s}: {row[f'batch{s}']['img_s']:7.1f} ({row[f'batch{s}']['ratio']:.2f}x)"
            for s in batches
        )
        print(f"{name:12s} {cells}  {row['properties']}")


if __name__ == "__main__":
    main()
