"""Measure warm start and kill -9 recovery of the whole service, per engine, in one run.

For each model and engine: start ``gunicorn -c gunicorn.conf.py wsgi:app`` (the master
starts the embedded model server) and time it until the first ``POST /predict`` answers
200; then, under light load (one client, a request every ``--interval-ms``), ``kill -9``
the model server and time until the next request sent after the kill answers 200. Every
line the service logs is timestamped as it arrives, so each figure comes with its parts
(model server started, listening, model loaded, ready, workers booted, first 200).

``openvino`` means OpenVINO on a warm model cache: the script primes the cache with one
untimed start when the first start reports ``model_cache`` other than ``hit``.

    python bench/startup.py --model tiny.keras --model effb0.keras \
        --engine tensorflow --engine openvino --repeats 2 --out startup.json
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
# Log lines whose first appearance (after the start or the kill) marks a phase.
MARKS = {
    "model_server_started": "started the model server",
    "model_server_listening": "model server listening",
    "model_loaded": "loaded the converted",
    "model_serving": " serves on ",
    "model_server_ready": "model server ready",
    "worker_booted": "Booting worker",
    "supervisor_saw_death": "the model server died",
}
_BOUNDARY = "onemodelstartupbench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _jpeg() -> bytes:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    if not ok:
        raise RuntimeError("cannot encode the test JPEG")
    return encoded.tobytes()


def _multipart(data: bytes) -> bytes:
    head = (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    return head + data + f"\r\n--{_BOUNDARY}--\r\n".encode()


def _post(port: int, body: bytes, timeout_s: float = 5.0) -> int:
    """POST /predict on a fresh connection; return the status (0 when none came)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request(
            "POST",
            "/predict",
            body,
            {"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"},
        )
        response = connection.getresponse()
        response.read()
        return int(response.status)
    except OSError:
        return 0
    finally:
        connection.close()


class _Service:
    """A Gunicorn master with the embedded model server; its log lines timestamped."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
        command += ["--bind", f"127.0.0.1:{port}", "wsgi:app"]
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip()))

    def marks(self, since: float) -> dict[str, float]:
        """Return when each marked line first appeared after ``since``, in s after it."""
        found: dict[str, float] = {}
        for at, line in list(self.lines):
            if at < since:
                continue
            for name, text in MARKS.items():
                if name not in found and text in line:
                    found[name] = round(at - since, 3)
        return found

    def model_server(self) -> psutil.Process:
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.Error):
                if "onemodel.model_server" in " ".join(child.cmdline()):
                    return child
        raise RuntimeError("no model server child")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._reader.join(5)


def _wait_200(service: _Service, port: int, body: bytes, timeout_s: float) -> float:
    """Poll /predict until a 200; return when it came (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            tail = "\n".join(line for _, line in service.lines[-20:])
            raise RuntimeError(f"the service exited:\n{tail}")
        if _post(port, body) == 200:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"no 200 within {timeout_s:g} s")


@contextlib.contextmanager
def _light_load(
    port: int, body: bytes, interval_s: float
) -> Iterator[list[tuple[float, float, int]]]:
    """One client sending a request every interval_s; yields (sent, answered, status)."""
    outcomes: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() and len(outcomes) < 100_000:
            started = time.monotonic()
            status = _post(port, body)
            outcomes.append((started, time.monotonic(), status))
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        thread.join(10)


def measure(
    model: str,
    engine: str,
    interval_s: float,
    timeout_s: float,
    extra_env: dict[str, str],
    *,
    show_log: bool = False,
) -> dict[str, Any]:
    """Start the service once and kill its model server once; return the figures."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "WEB_", "MAX_"))}
    env.update(
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        MODEL_PATH=model,
        MODEL_ENGINE=engine,
        MODEL_WEIGHTS="random",
        ACCESS_LOG="",
        **extra_env,
    )
    body = _multipart(_jpeg())
    load_average = round(os.getloadavg()[0], 2)
    service = _Service(env, port)
    try:
        first_200 = _wait_200(service, port, body, timeout_s)
        start = {"first_200_s": round(first_200 - service.started_at, 3)}
        start.update(service.marks(service.started_at))
        cache = next(
            (
                "hit" if "from the cache" in line else "miss"
                for _, line in service.lines
                if "converted" in line and "cache" in line
            ),
            "",
        )
        server = service.model_server()
        rss_mb = round(server.memory_info().rss / 2**20)
        with _light_load(port, body, interval_s) as outcomes:
            deadline = time.monotonic() + 10
            while sum(o[2] == 200 for o in outcomes) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            server.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            deadline = killed_at + timeout_s
            recovered_at = None
            while time.monotonic() < deadline and recovered_at is None:
                done = [o for o in list(outcomes) if o[0] > killed_at and o[2] == 200]
                recovered_at = done[0][1] if done else None
                time.sleep(0.01)
        if recovered_at is None:
            raise RuntimeError(f"no 200 within {timeout_s:g} s of the kill")
        failed = sum(1 for o in outcomes if o[0] > killed_at and o[2] != 200)
        # The first request sent after the kill that answered 200: when it answered.
        recovery = {
            "kill_to_first_200_s": round(recovered_at - killed_at, 3),
            "requests_failed": failed,
        }
        recovery.update(service.marks(killed_at))
    finally:
        service.stop()
        if show_log:
            for at, line in service.lines:
                print(f"{at - service.started_at:8.3f} {line}", file=sys.stderr)
    return {
        "model": Path(model).name,
        "engine": engine,
        "model_cache": cache,
        "load_average_1m": load_average,
        "model_server_rss_mb": rss_mb,
        "start": start,
        "kill": recovery,
    }


def main() -> None:
    """Run every model x engine ``--repeats`` times, interleaved; print and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="MODEL_PATH")
    parser.add_argument("--engine", action="append", choices=("tensorflow", "openvino"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--interval-ms", type=float, default=50.0, help="light load's pace")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--cache-dir", help="MODEL_CACHE_DIR (default: the usual one)")
    parser.add_argument("--no-prime", action="store_true", help="the cache is known warm")
    parser.add_argument("--show-log", action="store_true", help="print each run's log")
    parser.add_argument("--out")
    args = parser.parse_args()
    engines = args.engine or ["tensorflow", "openvino"]
    extra = {"MODEL_CACHE_DIR": args.cache_dir} if args.cache_dir else {}
    runs: list[dict[str, Any]] = []
    for model in args.model:
        if "openvino" in engines and not args.no_prime:  # prime the cache, untimed
            primed = measure(model, "openvino", args.interval_ms / 1000, args.timeout_s, extra)
            print(f"primed {Path(model).name}: cache {primed['model_cache']}", flush=True)
    for _ in range(args.repeats):
        for model in args.model:
            for engine in engines:
                run = measure(
                    model,
                    engine,
                    args.interval_ms / 1000,
                    args.timeout_s,
                    extra,
                    show_log=args.show_log,
                )
                print(json.dumps(run), flush=True)
                runs.append(run)
    summary: dict[str, Any] = {}
    for run in runs:
        key = f"{run['model']} {run['engine']}"
        entry = summary.setdefault(key, {"start_s": [], "kill_s": []})
        entry["start_s"].append(run["start"]["first_200_s"])
        entry["kill_s"].append(run["kill"]["kill_to_first_200_s"])
    for entry in summary.values():
        entry["start_median_s"] = round(statistics.median(entry["start_s"]), 2)
        entry["kill_median_s"] = round(statistics.median(entry["kill_s"]), 2)
    result = {"runs": runs, "summary": summary}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
