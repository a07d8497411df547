"""Soak test: a real deployment under mixed good and bad traffic, its memory watched.

    python scripts/soak.py [--duration-s 120] [--clients 4] [--model tiny|vgg16|PATH]

Starts Gunicorn (2 workers; the master starts the model server) on 127.0.0.1, sends good and
bad requests whose expected status is known, samples every worker's and the model server's
RSS, and compares the first third of the samples with the last (after a warm-up). Exits 1 on
any unexpected status, a restarted process or an RSS drift above both --max-drift-mb and
--max-drift-pct; 0 otherwise. Writes a JSON report (default tests/artifacts/soak.json).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test helpers start and drive the deployment

from tests.support.soak_verdict import default_sampling, drift, problems  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2


@dataclass(frozen=True)
class Probe:
    """One kind of request and the status it must get."""

    name: str
    weight: int
    expected: int
    send: Callable[[Any, str], Any]  # (requests.Session, base_url) -> requests.Response


def _probes(photo_rgb: Any) -> list[Probe]:
    import cv2  # noqa: PLC0415

    from tests.support.images import MULTIPART, multipart, png_header_only  # noqa: PLC0415

    bgr = cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2BGR)
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    png = cv2.imencode(".png", cv2.resize(bgr, (300, 200)))[1].tobytes()
    many_parts = multipart(
        [*[(f"f{i}".encode(), None, b"x") for i in range(40)], (b"file", b"a.jpg", jpeg)]
    )

    def upload(path: str, data: bytes, field: str = "file") -> Callable[[Any, str], Any]:
        return lambda session, url: session.post(
            url + path, files={field: ("photo.jpg", data, "image/jpeg")}, timeout=60
        )

    def raw(path: str, data: bytes, content_type: str) -> Callable[[Any, str], Any]:
        return lambda session, url: session.post(
            url + path, data=data, headers={"Content-Type": content_type}, timeout=60
        )

    def get(path: str) -> Callable[[Any, str], Any]:
        return lambda session, url: session.get(url + path, timeout=60)

    return [
        Probe("predict jpeg", 30, 200, upload("/predict", jpeg)),
        Probe("predict raw png top_k=3", 15, 200, raw("/predict?top_k=3", png, "image/png")),
        Probe("hello", 10, 200, upload("/hello", jpeg)),
        Probe("readyz", 3, 200, get("/readyz")),
        Probe("healthz", 3, 200, get("/healthz")),
        Probe("metrics", 2, 200, get("/metrics")),
        Probe("v2 ready", 2, 200, get("/v2/health/ready")),
        Probe("text as jpeg", 5, 415, upload("/predict", b"plain text, not an image" * 10)),
        Probe("truncated jpeg", 5, 400, upload("/predict", jpeg[: len(jpeg) // 3])),
        Probe("empty file", 4, 400, upload("/predict", b"")),
        Probe("wrong field", 4, 400, upload("/predict", jpeg, field="image")),
        Probe("png bomb", 4, 413, raw("/predict", png_header_only(30000, 30000), "image/png")),
        Probe("too many parts", 2, 413, raw("/predict", many_parts, MULTIPART)),
        Probe("11 MB upload", 1, 413, raw("/predict", b"\xff" * (11 * 2**20), "image/jpeg")),
        Probe("bad top_k", 4, 400, raw("/predict?top_k=0", jpeg, "image/jpeg")),
        Probe("json body", 2, 415, raw("/predict", b"{}", "application/json")),
        Probe("GET /predict", 2, 405, get("/predict")),
        Probe("unknown path", 2, 404, get("/no/such/path")),
    ]


def _build_tiny_model(directory: Path) -> Path:
    import subprocess  # noqa: PLC0415

    from tests.support.processes import PYTHON, base_env  # noqa: PLC0415

    path = directory / "tiny.keras"
    subprocess.run(
        [PYTHON, str(ROOT / "tests" / "support" / "make_model.py"), str(path)],
        check=True,
        env=base_env(),
        timeout=300,
        capture_output=True,
    )
    return path


class _Sampler:
    """Samples the RSS of every worker and the model server in a thread."""

    def __init__(self, master_pid: int, every_s: float) -> None:
        self._master_pid = master_pid
        self._every_s = every_s
        self.samples: list[dict[str, Any]] = []
        self.pids_seen: dict[str, set[int]] = defaultdict(set)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        import psutil  # noqa: PLC0415

        started = time.monotonic()
        while not self._stop.is_set():
            workers: dict[int, int] = {}
            model_server = 0
            try:
                for child in psutil.Process(self._master_pid).children():
                    rss = child.memory_info().rss
                    if "onemodel.model_server" in " ".join(child.cmdline()):
                        model_server = rss
                        self.pids_seen["model_server"].add(child.pid)
                    else:
                        workers[child.pid] = rss
                        self.pids_seen["workers"].add(child.pid)
            except psutil.Error:
                pass
            self.samples.append(
                {
                    "t_s": round(time.monotonic() - started, 2),
                    "workers_rss": workers,
                    "model_server_rss": model_server,
                }
            )
            self._stop.wait(self._every_s)


class _Traffic:
    """Client threads sending weighted random probes; every answer checked against its probe."""

    def __init__(self, probes: list[Probe], base_url: str, args: argparse.Namespace) -> None:
        self._probes = probes
        self._weights = [probe.weight for probe in probes]
        self._base_url = base_url
        self._args = args
        self._lock = threading.Lock()
        self._sent = 0
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.unexpected: list[dict[str, Any]] = []

    def run(self) -> None:
        """Send traffic until the duration or the request bound is reached."""
        deadline = time.monotonic() + self._args.duration_s
        threads = [
            threading.Thread(
                target=self._client, args=(self._args.seed + index, deadline), daemon=True
            )
            for index in range(self._args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self._args.duration_s + 120)

    def _client(self, seed: int, deadline: float) -> None:
        import requests  # noqa: PLC0415

        from tests.support.load import send_once  # noqa: PLC0415

        chooser = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < deadline:
            with self._lock:
                if self._sent >= self._args.max_requests:
                    return
                self._sent += 1
            probe = chooser.choices(self._probes, self._weights)[0]
            outcome = send_once(lambda s, p=probe: p.send(s, self._base_url), session)
            with self._lock:
                self.statuses[probe.name][str(outcome.status)] += 1
                self.latencies[probe.name].append(outcome.latency_s)
                if outcome.status != probe.expected:
                    self.unexpected.append(
                        {
                            "probe": probe.name,
                            "expected": probe.expected,
                            "status": outcome.status,
                            "code": outcome.code,
                            "error": outcome.error,
                            "request_id": outcome.request_id,
                        }
                    )
            if outcome.status is None:
                session = requests.Session()  # start afresh after a broken connection


def _model_environment(args: argparse.Namespace, work: Path) -> dict[str, str]:
    env = {"WEB_CONCURRENCY": str(args.workers), "WEB_THREADS": str(args.threads)}
    if args.model == "tiny":
        print("soak: building the tiny model", flush=True)
        env["MODEL_PATH"] = str(_build_tiny_model(work))
    elif args.model == "vgg16":
        env.update(MODEL_PATH="vgg16", MODEL_WEIGHTS="random")
    else:
        env["MODEL_PATH"] = args.model
    return env


def _report(
    args: argparse.Namespace, traffic: _Traffic, sampler: _Sampler, server_log: str
) -> dict[str, Any]:
    from tests.support.load import percentile  # noqa: PLC0415

    measured = [sample for sample in sampler.samples if sample["t_s"] >= args.warmup_s]
    rss_drift: dict[str, dict[str, float]] = {}
    if len(measured) >= 3:
        rss_drift["model_server"] = drift([s["model_server_rss"] for s in measured])
        rss_drift["workers_total"] = drift([sum(s["workers_rss"].values()) for s in measured])
    report: dict[str, Any] = {
        "config": {key: value for key, value in vars(args).items() if key != "report"},
        "requests": sum(sum(counter.values()) for counter in traffic.statuses.values()),
        "unexpected": len(traffic.unexpected),
        "unexpected_examples": traffic.unexpected[:20],
        "by_probe": {
            name: {
                "statuses": dict(traffic.statuses[name]),
                "p50_s": round(percentile(traffic.latencies[name], 0.5), 4),
                "p95_s": round(percentile(traffic.latencies[name], 0.95), 4),
            }
            for name in sorted(traffic.statuses)
        },
        "processes_stable": len(sampler.pids_seen["model_server"]) == 1
        and len(sampler.pids_seen["workers"]) == args.workers,
        "rss_samples": len(measured),
        "rss_drift": rss_drift,
        # [seconds, model server MB, all workers MB]
        "rss_timeline_mb": [
            [
                s["t_s"],
                round(s["model_server_rss"] / 2**20, 1),
                round(sum(s["workers_rss"].values()) / 2**20, 1),
            ]
            for s in sampler.samples
        ],
        "tracebacks_in_log": server_log.count("Traceback"),
    }
    if len(measured) < 3:
        report["rss_drift_note"] = "fewer than 3 samples after the warm-up: drift not computed"
    found = problems(report, args.max_drift_mb, args.max_drift_pct)
    if report["tracebacks_in_log"]:
        found.append(f"{report['tracebacks_in_log']} tracebacks in the log")
    report["problems"] = found
    report["passed"] = not found
    return report


def run(args: argparse.Namespace) -> int:
    """Run the soak; write the report; return the exit code."""
    import skimage.data  # noqa: PLC0415

    from tests.support.processes import base_env, free_port, start_gunicorn, wait_ready  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="onemodel-soak-"))
    env = _model_environment(args, work)
    port = args.port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    gunicorn = start_gunicorn(base_env(**env), work / "gunicorn.log", port)
    try:
        try:
            wait_ready(base_url, timeout_s=args.start_timeout_s, service=gunicorn)
        except (AssertionError, TimeoutError) as error:
            print(f"soak: the deployment did not start: {error}", file=sys.stderr)
            return EXIT_SETUP
        print(
            f"soak: {base_url} ready; {args.clients} clients for {args.duration_s:g} s", flush=True
        )
        sampler = _Sampler(gunicorn.pid, args.sample_every_s)
        traffic = _Traffic(_probes(skimage.data.coffee()), base_url, args)
        sampler.start()
        traffic.run()
        sampler.stop()
        server_log = gunicorn.log()
    finally:
        gunicorn.stop()
    report = _report(args, traffic, sampler, server_log)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    summary = {
        group: f"{figures['drift_mb']:+.1f} MB ({figures['drift_pct']:+.1f} %)"
        for group, figures in report["rss_drift"].items()
    }
    print(
        f"soak: {report['requests']} requests, {report['unexpected']} unexpected, "
        f"RSS drift {summary}"
    )
    for problem in report["problems"]:
        print(f"soak: FAILED: {problem}", file=sys.stderr)
    print(f"soak: report in {args.report}")
    if report["problems"]:
        print(f"soak: the deployment's log is in {work / 'gunicorn.log'}", file=sys.stderr)
        return EXIT_FAILED
    shutil.rmtree(work, ignore_errors=True)
    return EXIT_OK


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration-s", type=float, default=120.0, help="traffic time (default 120)"
    )
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    parser.add_argument(
        "--model",
        default="tiny",
        help="tiny (built here, 64x64), vgg16 (random weights) or a model file",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=0, help="default: a free port on 127.0.0.1")
    parser.add_argument(
        "--sample-every-s",
        type=float,
        default=None,
        help="RSS sampling period (default: duration / 60, at least 0.5 s)",
    )
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="samples ignored at the start (default: 10 %% of the duration)",
    )
    parser.add_argument("--max-drift-mb", type=float, default=20.0)
    parser.add_argument("--max-drift-pct", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="a bound on the load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start-timeout-s", type=float, default=600.0)
    parser.add_argument("--report", type=Path, default=ROOT / "tests" / "artifacts" / "soak.json")
    args = parser.parse_args(argv)
    sample_every_s, warmup_s = default_sampling(args.duration_s)
    if args.sample_every_s is None:
        args.sample_every_s = sample_every_s
    if args.warmup_s is None:
        args.warmup_s = warmup_s
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
