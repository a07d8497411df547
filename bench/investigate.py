"""Where onemodel's time goes: batch sizes, model busy share, CPU by role, optional py-spy."""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import assets
import loadgen
from processes import Launcher, Started, cpu_by_role, free_port, machine_busy_s, wait_ready
from systems import GUNICORN, PYTHON, ROOT, base_env, gunicorn_role

BENCH = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny", choices=("tiny", "vgg16"))
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--upload", default="224", choices=("224", "large"))
    parser.add_argument("--concurrency", default="1,8,16", help="comma-separated")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per point")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for both tiers")
    parser.add_argument("--py-spy", choices=("model_server", "web"), help="profile one tier")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Tiers:
    """The two tiers under investigation and the web port."""

    model_server: Started
    web: Started
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    def cpu_s(self) -> dict[str, float]:
        """Return CPU seconds so far: the model server, the Gunicorn master, its workers."""
        model = sum(cpu_by_role(self.model_server, gunicorn_role).values())
        return {"model_server": model, **cpu_by_role(self.web, gunicorn_role)}


def start_tiers(args: argparse.Namespace, launcher: Launcher, work: Path) -> Tiers:
    """Start the batch-logging model server and Gunicorn pointed at it."""
    socket_path, key_path = work / "model.sock", work / "authkey"
    key_path.write_text(secrets.token_hex(32))
    key_path.chmod(0o600)
    env = base_env()
    model = str(assets.ensure_tiny_model()) if args.model == "tiny" else "vgg16"
    env.update(MODEL_PATH=model, MODEL_WEIGHTS="random", MODEL_PRECISION=args.precision)
    env.update(dict(item.split("=", 1) for item in args.env))
    env.update(MODEL_SERVER_ADDRESS=str(socket_path), MODEL_SERVER_AUTHKEY_FILE=str(key_path))
    model_server = launcher.start(
        "model-server",
        [PYTHON, str(BENCH / "batch_logging_server.py"), str(work / "batches.jsonl")],
        env,
        cwd=ROOT,
    )
    port = free_port()
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY=str(args.workers),
        WEB_THREADS=str(args.threads),
        ACCESS_LOG="",
    )
    web = launcher.start("web", [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"], env, cwd=ROOT)
    wait_ready(web, f"http://127.0.0.1:{port}/readyz", 600)
    return Tiers(model_server, web, port)


def read_batches(path: Path, start: float, end: float) -> list[dict[str, Any]]:
    """Return the batch records whose model call ended within [start, end] (monotonic)."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return [b for b in map(json.loads, lines) if start <= b["t"] <= end]


def summarize_batches(batches: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Return batch-size histogram, mean size, model busy share, mean wait and call time."""
    if not batches:
        return {"batches": 0}
    sizes = collections.Counter(b["size"] for b in batches)
    images = sum(b["size"] for b in batches)
    busy_ms = sum(b["inference_ms"] for b in batches)
    return {
        "batches": len(batches),
        "mean_size": round(images / len(batches), 2),
        "sizes": dict(sorted(sizes.items())),
        "model_busy_share": round(busy_ms / 1000 / wall_s, 3),
        "mean_inference_ms": round(busy_ms / len(batches), 2),
        "inference_ms_per_image": round(busy_ms / images, 3),
        "mean_queue_wait_ms": round(sum(b["queue_wait_ms"] for b in batches) / len(batches), 2),
    }


def profile(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on a process tree for `seconds` (raw collapsed stacks)."""
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    argv = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--output",
        str(output),
        "--rate",
        "200",
        "--nonblocking",
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_frames(raw: Path, limit: int = 18) -> list[tuple[str, float]]:
    """Return the functions with the most samples, inclusive, as shares of all samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")[1:]):  # skip the process/thread root
            inclusive[frame] += count
    return (
        [(frame, round(n / total, 3)) for frame, n in inclusive.most_common(limit)] if total else []
    )


def measure(args: argparse.Namespace, tiers: Tiers, work: Path, concurrency: int) -> dict[str, Any]:
    """Run one wrk point and describe it: rate, latency, batches, CPU by tier."""
    image = assets.ensure_uploads()[args.upload].path
    cpu_before = tiers.cpu_s()
    spy = None
    if args.py_spy:
        target = tiers.model_server.pid if args.py_spy == "model_server" else tiers.web.pid
        spy = profile(target, args.duration * 0.8, work / f"spy-c{concurrency}.txt")
    busy_before, start = machine_busy_s(), time.monotonic()
    result = loadgen.run_wrk(tiers.url, image, concurrency, args.duration)
    end = time.monotonic()
    busy = machine_busy_s() - busy_before
    cpu_after = tiers.cpu_s()
    steady_from = start + loadgen.STEADY_START_SHARE * (end - start)
    batches = summarize_batches(
        read_batches(work / "batches.jsonl", steady_from, end), end - steady_from
    )
    requests = max(result.requests, 1)
    per_request = {
        role: round(1000 * (cpu_after[role] - cpu_before.get(role, 0.0)) / requests, 2)
        for role in cpu_after
    }
    per_request["wrk"] = round(1000 * result.wrk_cpu_s / requests, 2)
    point = {
        "concurrency": concurrency,
        "images_per_s": result.images_per_s,
        "latency_ms": result.latency_ms,
        "errors": result.errors,
        "batches": batches,
        "cpu_ms_per_request": per_request,
        "machine_busy_cores": round(busy / (end - start), 2),
    }
    if spy is not None:
        spy.wait(timeout=args.duration + 30)
        raw = work / f"spy-c{concurrency}.txt"
        point["py_spy_top"] = top_frames(raw) if raw.is_file() else "no profile"
    loadgen.pause(loadgen.drain_time_s(result))
    return point


def main(argv: list[str] | None = None) -> int:
    """Start both tiers, warm up, measure each concurrency, print JSON."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="investigate-", dir=assets.CACHE))
    launcher = Launcher(work)
    try:
        with launcher.session():
            tiers = start_tiers(args, launcher, work)
            image = assets.ensure_uploads()[args.upload].path
            concurrencies = [int(c) for c in args.concurrency.split(",")]
            loadgen.warm_up(tiers.url, image, max(concurrencies))
            for concurrency in concurrencies:
                print(json.dumps(measure(args, tiers, work, concurrency)), flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        if os.environ.get("KEEP_INVESTIGATION_FILES") != "1":
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
