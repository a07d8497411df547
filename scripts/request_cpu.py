"""Measure the CPU one prediction costs each process role of a real deployment.

Starts ``gunicorn -c gunicorn.conf.py wsgi:app`` (its master starts the private model
server) with a tiny model, so the model itself costs little, posts a 224x224 JPEG (the
benchmark's scikit-image chelsea) N times one after another and N times from C clients at
once, and reads every process's CPU time (user + system) with psutil before and after:
core-ms per request for the Gunicorn master, the workers, their decoder processes and the
model server. Decoders reaped during a block (killed, replaced) still count: their CPU
reaches their worker's ``children_*`` times.

Variants (``--variant NAME:VAR=VALUE,VAR=VALUE``) run side by side, each its own
deployment, and their blocks are interleaved round by round, so a comparison shares the
machine's noise. ``PYTHONPATH`` in a variant runs another copy of the code (a checkout
of main, say) against this one. ``--py-spy S`` records one worker for S seconds during a
sequential block and prints where its time goes.

    PYTHONPATH=src .venv/bin/python scripts/request_cpu.py --requests 400 --rounds 2 \\
        --variant before:PYTHONPATH=/tmp/base/src --variant after
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
# The model and the JPEG are built once; profiles are written here too (outside the repository).
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onemodel-request-cpu"
DECODER_COMMAND = "onemodel.web.decoder_process"
MODEL_SERVER_COMMAND = "onemodel.model_server"
ROLES = ("master", "worker", "decoder", "model_server")
BOUNDARY = "request-cpu-3f1c0b6e"
# Variables of the caller's environment that would change what is measured.
_DROPPED_PREFIXES = ("MODEL_", "WEB_", "DECODE", "PROMETHEUS_", "GUNICORN_", "API_KEYS")
START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0
# py-spy samples per second; with --gil a sample is a moment some thread held the GIL.
PY_SPY_RATE = 400


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per block (default 400)")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated (default 1,8)")
    parser.add_argument("--rounds", type=int, default=2, help="blocks per variant and c")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--model-size", type=int, default=224, help="tiny model input side")
    parser.add_argument("--upload", type=Path, help="image to post (default: chelsea 224x224)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME or NAME:VAR=VALUE,VAR=VALUE (repeatable; default: one, 'current')",
    )
    parser.add_argument("--env", action="append", default=[], help="VAR=VALUE for every variant")
    parser.add_argument("--py-spy", type=float, default=0.0, help="profile a worker S seconds")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="whole-run bound")
    return parser.parse_args(argv)


# --- inputs -----------------------------------------------------------------------------


def ensure_tiny_model(size: int) -> Path:
    """Build bench/make_tiny_model.py's model at ``size`` x ``size`` once (in a subprocess)."""
    path = CACHE / f"tiny-{size}.keras"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        script = ROOT / "bench" / "make_tiny_model.py"
        partial = path.with_suffix(".partial.keras")
        subprocess.run(
            [PYTHON, str(script), str(partial), "--size", str(size)], check=True, timeout=300
        )
        partial.rename(path)
    return path


def ensure_upload() -> Path:
    """Write the 224x224 chelsea JPEG as bench/assets.py does (quality 90, area resize)."""
    path = CACHE / "chelsea-224.jpg"
    if not path.is_file():
        import cv2  # noqa: PLC0415
        import numpy as np  # noqa: PLC0415
        import skimage.data  # noqa: PLC0415

        CACHE.mkdir(parents=True, exist_ok=True)
        rgb = np.ascontiguousarray(skimage.data.chelsea()[..., :3])  # type: ignore[no-untyped-call]
        resized = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)
        ok, encoded = cv2.imencode(
            ".jpg", cv2.cvtColor(resized, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        if not ok:
            raise RuntimeError("could not encode the upload")
        path.write_bytes(encoded.tobytes())
    return path


def multipart(data: bytes, filename: str) -> bytes:
    """Return a multipart/form-data body with ``data`` as field ``file``."""
    return (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


# --- the deployment ---------------------------------------------------------------------


@dataclass
class Deployment:
    """One Gunicorn master (and its model server, workers and decoders) on a port."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    work: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def tree(self) -> list[psutil.Process]:
        """Return the master and its live descendants (remembered, to stop leftovers)."""
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for process in processes:
            self.seen.setdefault(process.pid, process)
        return processes

    def role(self, process: psutil.Process) -> str:
        """Name a process of the tree: master, worker, decoder or model_server."""
        if process.pid == self.process.pid:
            return "master"
        command = _cmdline(process)
        if DECODER_COMMAND in command:
            return "decoder"
        if MODEL_SERVER_COMMAND in command:
            return "model_server"
        return "worker"

    def count(self, role: str) -> int:
        """Return how many live processes have ``role``."""
        return sum(1 for process in self.tree() if self.role(process) == role)

    def stop(self) -> None:
        """SIGTERM the master, wait, then end anything of its tree that is left."""
        self.tree()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        alive = [p for p in self.seen.values() if p.is_running()]
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.work, ignore_errors=True)


def start_deployment(
    name: str, env_overrides: dict[str, str], args: argparse.Namespace, model: Path
) -> Deployment:
    """Start Gunicorn with the deployment's own metrics directory, on a free port."""
    work = Path(tempfile.mkdtemp(prefix=f"request-cpu-{name}-"))
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_DROPPED_PREFIXES) and key != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY=str(args.workers),
        WEB_THREADS=str(args.threads),
        MODEL_PATH=str(model),
        MODEL_WEIGHTS="random",
        ACCESS_LOG="",  # as in the benchmark; a variant may turn it on ("-")
    )
    env.update(dict(item.split("=", 1) for item in args.env))
    env.update(env_overrides)
    log_path = work / "gunicorn.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Deployment(name, process, port, log_path, work)


def wait_ready(deployment: Deployment, workers: int, deadline: float) -> None:
    """Poll /readyz until it answers 200 and every worker is up."""
    while time.monotonic() < deadline:
        if deployment.process.poll() is not None:
            raise RuntimeError(f"{deployment.name} exited:\n{_tail(deployment.log_path)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection("127.0.0.1", deployment.port, timeout=5)
            connection.request("GET", "/readyz")
            status = connection.getresponse().status
            connection.close()
            if status == 200 and deployment.count("worker") >= workers:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{deployment.name} not ready:\n{_tail(deployment.log_path)}")


def warm_up(deployment: Deployment, body: bytes, workers: int, deadline: float) -> None:
    """Post from many connections until every worker has started its decoder."""
    while time.monotonic() < deadline:
        post_many(deployment.port, body, requests=4 * workers * 4, concurrency=4 * workers)
        decoders = deployment.count("decoder")
        if decoders >= workers or "DECODER_PROCESSES=0" in deployment.name:
            return
        if _decoders_disabled(deployment):
            return
    raise TimeoutError(f"{deployment.name}: decoders did not start in every worker")


def _decoders_disabled(deployment: Deployment) -> bool:
    for process in deployment.tree():
        if deployment.role(process) == "worker":
            with contextlib.suppress(psutil.Error):
                return bool(process.environ().get("DECODER_PROCESSES") == "0")
    return False


# --- load -------------------------------------------------------------------------------


def post_many(port: int, body: bytes, requests: int, concurrency: int) -> list[float]:
    """POST ``requests`` uploads from ``concurrency`` keep-alive clients; return latencies."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    counts = [
        requests // concurrency + (1 if i < requests % concurrency else 0)
        for i in range(concurrency)
    ]
    barrier = threading.Barrier(concurrency)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        mine: list[float] = []
        barrier.wait()
        try:
            for _ in range(count):
                started = time.perf_counter()
                connection.request("POST", "/predict", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                mine.append(time.perf_counter() - started)
                if response.status != 200:
                    with lock:
                        failures.append(f"{response.status} {answer[:200]!r}")
        except (OSError, http.client.HTTPException) as error:
            with lock:
                failures.append(repr(error))
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(count,)) for count in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return latencies


# --- CPU accounting ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One process's CPU seconds at one moment."""

    role: str
    created: float
    own_s: float
    system_s: float  # the kernel's part of own_s
    reaped_s: float  # CPU of children it waited for (children_user + children_system)


def snapshot(deployment: Deployment) -> dict[int, Sample]:
    """Return every live process's CPU times, by pid."""
    samples = {}
    for process in deployment.tree():
        try:
            times = process.cpu_times()
            samples[process.pid] = Sample(
                deployment.role(process),
                process.create_time(),
                times.user + times.system,
                times.system,
                times.children_user + times.children_system,
            )
        except psutil.Error:
            continue
    return samples


# Whose CPU a role's reaped children carry: workers reap decoders, the master its workers
# and the model server.
_REAPED_ROLE = {
    "worker": "decoder",
    "master": "reaped_by_master",
    "model_server": "model_server",
    "decoder": "decoder",
}


def cpu_delta(before: dict[int, Sample], after: dict[int, Sample]) -> dict[str, Any]:
    """Return CPU seconds per role between two snapshots, and processes started and ended."""
    seconds: dict[str, float] = collections.defaultdict(float)
    system: dict[str, float] = collections.defaultdict(float)
    started = ended = 0
    for pid, sample in after.items():
        earlier = before.get(pid)
        if earlier is None or earlier.created != sample.created:
            started += 1
            earlier = Sample(sample.role, sample.created, 0.0, 0.0, 0.0)
        seconds[sample.role] += sample.own_s - earlier.own_s
        system[sample.role] += sample.system_s - earlier.system_s
        seconds[_REAPED_ROLE[sample.role]] += sample.reaped_s - earlier.reaped_s
    for pid, sample in before.items():
        later = after.get(pid)
        if later is None or later.created != sample.created:
            ended += 1
            # Its CPU since `before` reached its parent's children_* times (counted above,
            # with the part before `before` too: subtract that part).
            seconds[sample.role] -= sample.own_s
    return {
        "seconds": dict(seconds),
        "system_seconds": dict(system),
        "processes_started": started,
        "processes_ended": ended,
    }


def machine_busy_s() -> float:
    """Return the CPU seconds every process of the machine has used so far."""
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def measure_block(
    deployment: Deployment, body: bytes, requests: int, concurrency: int
) -> dict[str, Any]:
    """Run one block of requests; return core-ms per request per role and the context."""
    load_before = os.getloadavg()[0]
    before = snapshot(deployment)
    busy_before = machine_busy_s()
    started = time.perf_counter()
    latencies = post_many(deployment.port, body, requests, concurrency)
    wall_s = time.perf_counter() - started
    busy_s = machine_busy_s() - busy_before
    after = snapshot(deployment)
    delta = cpu_delta(before, after)
    per_role = {role: 1000 * s / requests for role, s in delta["seconds"].items()}
    ours_s = sum(delta["seconds"].values())
    latencies.sort()
    return {
        "variant": deployment.name,
        "concurrency": concurrency,
        "requests": requests,
        "wall_s": round(wall_s, 3),
        "rate_per_s": round(requests / wall_s, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "core_ms_per_request": {role: round(ms, 3) for role, ms in sorted(per_role.items())},
        "system_share": {
            role: round(s / delta["seconds"][role], 2)
            for role, s in sorted(delta["system_seconds"].items())
            if delta["seconds"].get(role, 0.0) > 0
        },
        "web_core_ms_per_request": round(
            sum(ms for role, ms in per_role.items() if role != "model_server"), 3
        ),
        "total_core_ms_per_request": round(1000 * ours_s / requests, 3),
        "other_cpu_share": round(
            max(0.0, (busy_s - ours_s) / (wall_s * (psutil.cpu_count() or 1))), 3
        ),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "processes_started": delta["processes_started"],
        "processes_ended": delta["processes_ended"],
    }


def idle_rate(deployment: Deployment, seconds: float) -> dict[str, float]:
    """Return each role's CPU per second while nothing is asked (probes, heartbeats)."""
    before = snapshot(deployment)
    time.sleep(seconds)
    delta = cpu_delta(before, snapshot(deployment))
    return {role: round(1000 * s / seconds, 3) for role, s in sorted(delta["seconds"].items())}


# --- profiling --------------------------------------------------------------------------


def profile_worker(
    deployment: Deployment, body: bytes, seconds: float, output: Path
) -> dict[str, Any]:
    """Record one worker with py-spy while a client posts to it; summarise the stacks."""
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    connection = http.client.HTTPConnection("127.0.0.1", deployment.port, timeout=30)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    connection.request("POST", "/predict", body=body, headers=headers)
    connection.getresponse().read()
    # The worker that answered holds this keep-alive connection: find it by its socket.
    local_port = connection.sock.getsockname()[1]
    worker = _worker_with_peer(deployment, local_port)
    recorder = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(worker.pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            str(PY_SPY_RATE),
            "--format",
            "raw",
            "--gil",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # py-spy attaches
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and recorder.poll() is None:
        connection.request("POST", "/predict", body=body, headers=headers)
        connection.getresponse().read()
        count += 1
    connection.close()
    _, error = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not output.is_file():
        return {"error": error.decode(errors="replace")[-500:]}
    summary = summarise_stacks(output)
    # Each sample stands for 1/rate s of the GIL held: Python's own CPU per request.
    gil_ms = 1000 * summary["samples"] / PY_SPY_RATE / max(count, 1)
    return {"worker_pid": worker.pid, "requests": count, "gil_ms_per_request": gil_ms, **summary}


# Where a worker's sample belongs: its frames are read from the innermost outwards, and
# the first frame matching a phase's file names decides.
PHASES = (
    ("metrics (prometheus)", ("prometheus_client",)),
    ("logging", ("logging/__init__.py", "glogging.py")),
    ("model call: pickling", ("multiprocessing/reduction.py", "pickle")),
    ("model call: socket", ("multiprocessing/connection.py",)),
    ("model call: pool and client", ("boundary/pool.py", "boundary/client.py")),
    ("decoder pipe", ("web/decoder_pool.py",)),
    ("multipart", ("formparser.py", "sansio/multipart.py", "web/uploads.py")),
    ("JSON", ("flask/json", "json/")),
    ("ranking", ("web/predictions.py", "web/ranking.py", "web/served_model.py")),
    ("request id, API key, request metrics", ("web/app.py", "request_ids.py", "api_keys.py")),
    ("Flask and Werkzeug", ("flask/", "werkzeug/")),
    ("Gunicorn HTTP parser and response", ("gunicorn/http/",)),
    ("event loop: request framing", ("request_framing.py",)),
    ("event loop: onemodel worker", ("web/worker.py",)),
    ("event loop: Gunicorn", ("gthread.py", "workers/base.py", "workertmp.py", "selectors.py")),
    ("thread pool", ("concurrent/futures",)),
)


def phase_of(frames: list[str]) -> str:
    """Return the phase a stack (outermost frame first) was sampled in."""
    for frame in reversed(frames):
        for name, needles in PHASES:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def summarise_stacks(path: Path, top: int = 25) -> dict[str, Any]:
    """Return the functions with most samples (self and inclusive) and the phases' shares."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    phases: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[_frame(frames[-1])] += count
        phases[phase_of(frames)] += count
        for name in {_frame(frame) for frame in frames}:
            inclusive[name] += count
    return {
        "samples": total,
        "self": [(name, round(100 * n / total, 1)) for name, n in own.most_common(top)],
        "inclusive": [(name, round(100 * n / total, 1)) for name, n in inclusive.most_common(top)],
        "phases": [(name, round(100 * n / total, 1)) for name, n in phases.most_common()],
    }


def _frame(frame: str) -> str:
    # py-spy's raw frames are "function (file:line)": keep the function and the file's tail.
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    tail = "/".join(path.split("/")[-2:])
    return f"{name} ({tail})"


def _worker_with_peer(deployment: Deployment, client_port: int) -> psutil.Process:
    for process in deployment.tree():
        if deployment.role(process) != "worker":
            continue
        with contextlib.suppress(psutil.Error):
            for conn in process.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == client_port:
                    return process
    raise RuntimeError("no worker holds the profiling connection")


# --- the run ----------------------------------------------------------------------------


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """Parse ``NAME`` or ``NAME:VAR=VALUE,VAR=VALUE``."""
    name, _, assignments = text.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return name, env


@contextlib.contextmanager
def deployments(
    variants: list[tuple[str, dict[str, str]]], args: argparse.Namespace, model: Path
) -> Iterator[list[Deployment]]:
    """Start every variant's deployment; stop them all on exit, even on error."""
    started: list[Deployment] = []
    try:
        for name, env in variants:
            started.append(start_deployment(name, env, args, model))
        yield started
    finally:
        for deployment in started:
            deployment.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the blocks, print a table per role, optionally write JSON."""
    args = parse_args(argv)
    run_deadline = time.monotonic() + args.max_seconds
    variants = [parse_variant(text) for text in args.variant] or [("current", {})]
    levels = [int(text) for text in args.concurrency.split(",")]
    model = ensure_tiny_model(args.model_size)
    upload = args.upload or ensure_upload()
    body = multipart(upload.read_bytes(), upload.name)
    results: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": psutil.cpu_count(),
        "model": f"tiny {args.model_size}x{args.model_size}",
        "upload": f"{upload.name} ({upload.stat().st_size} bytes)",
        "workers": args.workers,
        "threads": args.threads,
        "variants": {name: env for name, env in variants},
        "blocks": [],
        "idle_core_ms_per_s": {},
    }
    with deployments(variants, args, model) as running:
        for deployment in running:
            wait_ready(deployment, args.workers, time.monotonic() + START_TIMEOUT_S)
        for deployment in running:
            warm_up(deployment, body, args.workers, time.monotonic() + 120)
            results["idle_core_ms_per_s"][deployment.name] = idle_rate(deployment, 2.0)
        for round_index in range(args.rounds):
            for concurrency in levels:
                # Alternate the order each round: no variant always runs first.
                order = running if round_index % 2 == 0 else running[::-1]
                for deployment in order:
                    if time.monotonic() > run_deadline:
                        raise TimeoutError("--max-seconds passed")
                    block = measure_block(deployment, body, args.requests, concurrency)
                    block["round"] = round_index
                    results["blocks"].append(block)
                    _print_block(block)
        if args.py_spy > 0:
            output = CACHE / f"py-spy-{running[0].name}.txt"
            results["profile"] = profile_worker(running[0], body, args.py_spy, output)
            _print_profile(results["profile"])
    results["summary"] = summarise(results["blocks"])
    _print_summary(results["summary"])
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def summarise(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return, per variant and concurrency, the mean core-ms per request of each role."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for block in blocks:
        grouped[(block["variant"], block["concurrency"])].append(block)
    summary: dict[str, dict[str, Any]] = {}
    for (variant, concurrency), group in grouped.items():
        roles = sorted({role for block in group for role in block["core_ms_per_request"]})
        mean = {
            role: round(
                sum(block["core_ms_per_request"].get(role, 0.0) for block in group) / len(group), 3
            )
            for role in roles
        }
        web = sorted(block["web_core_ms_per_request"] for block in group)
        summary.setdefault(variant, {})[f"c={concurrency}"] = {
            "core_ms_per_request": mean,
            "web_core_ms_per_request": round(sum(web) / len(web), 3),
            # Other work on the machine only ever adds CPU time: the median and the
            # minimum of the blocks are the steadier figures on a busy machine.
            "web_core_ms_median": round(statistics.median(web), 3),
            "web_core_ms_min": round(web[0], 3),
            "core_ms_median": {
                role: round(
                    statistics.median(b["core_ms_per_request"].get(role, 0.0) for b in group), 3
                )
                for role in roles
            },
            "rate_per_s": round(sum(block["rate_per_s"] for block in group) / len(group), 1),
            "load_average": [block["load_average"] for block in group],
        }
    return summary


def _print_block(block: dict[str, Any]) -> None:
    roles = ", ".join(f"{role} {ms:.2f}" for role, ms in block["core_ms_per_request"].items())
    print(
        f"{block['variant']:>12} c={block['concurrency']:<2} {block['rate_per_s']:7.1f}/s "
        f"p50 {block['p50_ms']:6.2f} ms | web {block['web_core_ms_per_request']:.2f} core-ms "
        f"({roles}) load {block['load_average'][0]:.2f} other {block['other_cpu_share']:.2f} "
        f"sys {block['system_share']}",
        flush=True,
    )


def _print_summary(summary: dict[str, dict[str, Any]]) -> None:
    print("\ncore-ms per request (web = every role but the model server):")
    for variant, levels in summary.items():
        for level, figures in levels.items():
            roles = ", ".join(f"{r} {ms:.2f}" for r, ms in figures["core_ms_median"].items())
            print(
                f"{variant:>12} {level:<4} web mean {figures['web_core_ms_per_request']:.2f} "
                f"median {figures['web_core_ms_median']:.2f} min {figures['web_core_ms_min']:.2f}"
                f" (medians: {roles})"
            )


def _print_profile(profile: dict[str, Any]) -> None:
    if "error" in profile:
        print(f"\npy-spy failed: {profile['error']}")
        return
    print(
        f"\nworker {profile['worker_pid']}: {profile['samples']} samples, "
        f"{profile['requests']} requests, GIL held {profile['gil_ms_per_request']:.2f} ms "
        "per request"
    )
    for kind in ("phases", "self", "inclusive"):
        print(f"  by {kind}:" if kind == "phases" else f"  by {kind} time:")
        for name, share in profile[kind]:
            print(f"    {share:5.1f}%  {name}")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _cmdline(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(process.cmdline())
    return ""


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


if __name__ == "__main__":
    sys.exit(main())
