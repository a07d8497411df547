"""One vs two model servers behind one Gunicorn: throughput, and what a kill or a stop costs.

``python bench/pool.py`` (``make bench-pool``, about 4 minutes; ``make bench`` runs it too)

Starts onemodel under real Gunicorn twice, with ``MODEL_SERVER_REPLICAS=1`` and ``=2``
(embedded mode: the master starts and supervises the model servers), the tiny model, and
drives each with 8 client threads on 127.0.0.1 (bench/closed_loop.py, which records every
request). Measures, for each deployment:

1. steady throughput and latency, in rounds alternating between the two deployments (both
   running, the idle one costs little), so a busy machine slows both alike;
2. kill -9 of one model server under load: non-200 answers, the longest time without a 200,
   latency meanwhile, and when the master's restarted replica is ready and serves again
   (from /readyz); 3. the same for SIGTERM (a graceful stop);
4. how the images spread over the replicas (images_served per replica in /readyz);
5. the memory of the whole process tree (PSS), each deployment measured alone.

Writes bench/results/pool.json; bench/README.md describes the method. The targets (two
replicas: kill -9 and SIGTERM lose no request, the restarted one serves within 10 s, spread
min/max >= 0.25) are issue 12's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import assets
import environment
import loadgen
import pool_figures
import pool_report
import psutil
import report
from closed_loop import ClosedLoop, Outcome
from processes import Launcher, cpu_by_role, machine_busy_s, memory_by_role, other_cpu_share
from runner import RunConfig, log_line
from systems import PYTHON, ROOT, Server, ServerSpec, onemodel_role, start_server

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
REPLICA_COUNTS = (1, 2)
START_TIMEOUT_S = 300.0
# After the warm-up requests: the first seconds of load on a fresh server are slower.
WARM_S = 2.0
# A round's first second is not counted: the clients' first requests arrive together.
RAMP_S = 1.0
# Load before the signal, and after the victim serves again.
BEFORE_FAULT_S = 2.0
AFTER_FAULT_S = 2.0
# How long the victim may take to serve again, and the longest a fault's load runs. Under
# load on 2 cores a restarted model server needs 25-60 s to import TensorFlow and load.
RECOVERY_MAX_S = 120.0
FAULT_MAX_S = RECOVERY_MAX_S + 30.0
POLL_S = 0.1
MAX_REQUESTS = 100_000  # per load: far above what 8 clients complete in FAULT_MAX_S here
# A client that got an error waits this long before its next request, as a polite client
# does: without it, a lone server's fast 503s would be counted by the ten thousand.
PAUSE_AFTER_FAILURE_S = 0.1
# The faults, in order: (name, signal). _faults() picks each one's victim.
FAULTS = (("kill-9", signal.SIGKILL), ("sigterm", signal.SIGTERM))
DRAIN_LOG_LINE = "every accepted prediction was answered"
Log = Callable[[str], None]
# What a phase may fail with; recorded in the results instead of ending the run.
MEASURE_ERRORS = (RuntimeError, TimeoutError, OSError, ValueError, KeyError, psutil.Error)


@dataclass(frozen=True)
class PoolConfig:
    """What the pool benchmark serves and how hard it pushes."""

    model_path: str
    upload: Path
    log_dir: Path
    # The service's default: availability is measured on the deployment users run (a warm
    # OpenVINO cache makes a restarted model server ready in about a second, TensorFlow in tens).
    engine: str = "auto"
    precision: str = "float32"
    workers: int = 4
    threads: int = 8
    clients: int = 8
    rounds: int = 2
    round_s: float = 5.0

    @classmethod
    def for_run(cls, run: RunConfig) -> PoolConfig:
        """Return the configuration bench/run.py's full mode measures with (its web shape)."""
        return cls(
            # Built once into bench/.cache; the run's own panels may not use it.
            model_path=str(assets.ensure_tiny_model()),
            upload=run.uploads["224"].path,
            log_dir=run.log_dir / "pool",
            workers=run.web_workers,
            threads=run.web_threads,
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as plain JSON data."""
        settings = {key: value for key, value in asdict(self).items() if key != "log_dir"}
        return {
            **settings,
            "model": Path(self.model_path).stem,
            "upload": self.upload.name,
            "pause_after_failure_s": PAUSE_AFTER_FAILURE_S,
            "load_generator": "bench/closed_loop.py (threads in the bench process)",
        }


class Deployment:
    """One onemodel Gunicorn with N embedded model servers, and how to look inside it."""

    def __init__(self, replicas: int, server: Server, launcher: Launcher) -> None:
        self.replicas = replicas
        self.server = server
        self.launcher = launcher
        self.startup_s = 0.0

    @property
    def name(self) -> str:
        return f"{self.replicas} replica{'s' if self.replicas > 1 else ''}"

    def readyz(self) -> tuple[int, dict[str, Any]]:
        """Return /readyz's status and JSON body (also of a 503: it lists the replicas)."""
        url = f"{self.server.base_url}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5.0) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            with contextlib.suppress(ValueError):
                return error.code, json.loads(error.read() or b"{}")
            return error.code, {}
        except (OSError, ValueError):
            return 0, {}

    def replica_view(self) -> dict[str, dict[str, Any]]:
        """Return /readyz's replicas by address ({} when it does not answer)."""
        _, body = self.readyz()
        return {item["address"]: item for item in body.get("replicas", [])}

    def served(self) -> dict[str, int]:
        """Return the images each replica has served, as /readyz lists them."""
        return {a: int(item["images_served"]) for a, item in self.replica_view().items()}

    def model_servers(self) -> dict[str, psutil.Process]:
        """Return the model-server processes the master runs now, by their address."""
        found = {}
        self.server.started.tree()  # remembered, so the launcher stops restarted ones too
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.server.started.pid).children():
                if onemodel_role(child, self.server.started.pid) != "model_server":
                    continue
                with contextlib.suppress(psutil.Error, KeyError):
                    found[child.environ()["MODEL_SERVER_ADDRESS"]] = child
        return found

    def wait_all_ready(self, timeout_s: float) -> None:
        """Wait until /readyz lists every replica ready; raise TimeoutError if not in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            view = self.replica_view()
            if len(view) == self.replicas and all(item["ready"] for item in view.values()):
                return
            loadgen.pause(POLL_S)
        raise TimeoutError(f"{self.name}: not every replica ready after {timeout_s:g} s")

    def stop(self) -> None:
        """Stop Gunicorn and its model servers."""
        self.launcher.stop(self.server.started)


def measure(config: PoolConfig, log: Log = log_line) -> dict[str, Any]:
    """Run the whole pool benchmark; return its results as plain data (with its targets)."""
    started = time.monotonic()
    results: dict[str, Any] = {
        "config": config.as_dict(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
    }
    body, content_type = loadgen.multipart(config.upload.read_bytes(), config.upload.name)
    systems: dict[int, dict[str, Any]] = {n: {"replicas": n} for n in REPLICA_COUNTS}
    _prime_cache(config, log)
    with contextlib.ExitStack() as stack:
        deployments: dict[int, Deployment] = {}
        for n in REPLICA_COUNTS:
            try:
                deployments[n] = _start(n, config, stack, body, content_type, log)
            except MEASURE_ERRORS as error:
                log(f"pool: {n} replica(s) did not start: {error}")
                systems[n]["error"] = str(error)
                continue
            systems[n]["startup_s"] = deployments[n].startup_s
            systems[n]["engine"] = deployments[n].server.ready_info.get("engine")
            if n == REPLICA_COUNTS[0]:
                # Alone on the machine: PSS splits pages shared with another deployment.
                systems[n]["memory"] = memory_by_role(deployments[n].server.started, onemodel_role)
        try:
            for n, steady in _steady(list(deployments.values()), config, body, content_type, log):
                systems[n].update(steady)
        except MEASURE_ERRORS as error:
            # Recorded, not raised: inside `make bench` the other results must survive.
            log(f"pool: the steady rounds failed: {error!r}")
            results["error"] = f"steady rounds: {error!r}"
        for n, deployment in deployments.items():
            if n != REPLICA_COUNTS[0]:
                systems[n]["memory"] = memory_by_role(deployment.server.started, onemodel_role)
            events = systems[n]["events"] = {}
            for index, (name, signum) in _faults(n):
                try:
                    events[name] = _fault(
                        deployment, name, signum, index, config, body, content_type, log
                    )
                except MEASURE_ERRORS as error:
                    log(f"pool: {deployment.name} {name} failed: {error!r}")
                    events[name] = {"error": repr(error)}
            deployment.stop()
    results["systems"] = [systems[n] for n in REPLICA_COUNTS]
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["targets"] = [verdict.as_dict() for verdict in pool_figures.evaluate(results)]
    return results


def _prime_cache(config: PoolConfig, log: Log) -> None:
    """Convert the model into the engine cache first, so no deployment pays for it.

    Otherwise the first deployment's model server converts (TensorFlow in memory beside
    OpenVINO) and its memory and start say more about the conversion than about serving.
    """
    if config.engine == "tensorflow":
        return
    env = _spec(config, replicas=1).model_env()
    began = time.monotonic()
    try:
        done = subprocess.run(
            [PYTHON, "-m", "onemodel", "prepare"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log(f"pool: preparing the model took over {START_TIMEOUT_S:g} s; the first start will")
        return
    outcome = done.stdout.strip().splitlines()[-1:] or done.stderr.strip().splitlines()[-1:]
    log(f"pool: model prepared in {time.monotonic() - began:.1f} s ({' '.join(outcome)})")


def _spec(config: PoolConfig, replicas: int) -> ServerSpec:
    return ServerSpec(
        config.model_path,
        config.precision,
        config.workers,
        config.threads,
        extra_env=(("MODEL_SERVER_REPLICAS", str(replicas)),),
        engine=config.engine,
    )


def _faults(replicas: int) -> Iterator[tuple[int, tuple[str, signal.Signals]]]:
    """Yield (victim index, fault): with two replicas, each fault hits a different one.

    The master restarts a replica after 0.5 s, doubling that for a replica that dies again
    within 60 s; with one replica the second fault meets a 1 s back-off.
    """
    for number, fault in enumerate(FAULTS):
        yield number % replicas, fault


def _start(  # noqa: PLR0917
    replicas: int,
    config: PoolConfig,
    stack: contextlib.ExitStack,
    body: bytes,
    content_type: str,
    log: Log,
) -> Deployment:
    launcher = stack.enter_context(Launcher(config.log_dir / f"replicas-{replicas}").session())
    spec = _spec(config, replicas)
    began = time.monotonic()
    server = start_server("onemodel", spec, launcher, START_TIMEOUT_S)
    deployment = Deployment(replicas, server, launcher)
    deployment.wait_all_ready(START_TIMEOUT_S)
    deployment.startup_s = round(time.monotonic() - began, 2)
    failures = loadgen.warm_up(server.predict_url, config.upload, config.clients)
    with ClosedLoop(
        server.predict_url, body, content_type, config.clients, WARM_S, MAX_REQUESTS
    ) as warm:
        loadgen.pause(WARM_S)
    failures += sum(not outcome.ok for outcome in warm.outcomes())
    log(
        f"pool: {deployment.name} ready in {deployment.startup_s:.1f} s "
        f"(engine {server.ready_info.get('engine')}), {failures} failed warm-up requests"
    )
    return deployment


def _steady(
    deployments: list[Deployment],
    config: PoolConfig,
    body: bytes,
    content_type: str,
    log: Log,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield each deployment's steady figures, measured in rounds alternating between them."""
    rounds: dict[int, list[dict[str, Any]]] = {d.replicas: [] for d in deployments}
    windows: dict[int, list[tuple[list[Outcome], float, float]]] = {
        d.replicas: [] for d in deployments
    }
    served: dict[int, dict[str, int]] = {d.replicas: {} for d in deployments}
    for number in range(config.rounds):
        for deployment in deployments:
            entry, window, delta = _round(deployment, config, body, content_type)
            rounds[deployment.replicas].append(entry)
            windows[deployment.replicas].append(window)
            for address, count in delta.items():
                served[deployment.replicas][address] = (
                    served[deployment.replicas].get(address, 0) + count
                )
            log(
                f"pool: {deployment.name} round {number + 1}: "
                f"{entry['requests_per_s']:.1f} req/s, p50 {entry['latency_ms']['p50']} ms, "
                f"p95 {entry['latency_ms']['p95']} ms, non-200 {entry['non_200']}, "
                f"other work {100 * entry['other_cpu_share']:.0f}% CPU"
            )
    for deployment in deployments:
        n = deployment.replicas
        figures = pool_figures.steady_figures(windows[n])
        yield (
            n,
            {
                "steady": {**figures, "rounds": rounds[n]},
                "served_by_replica": served[n],
                "spread": pool_figures.spread(served[n]),
            },
        )


def _round(
    deployment: Deployment, config: PoolConfig, body: bytes, content_type: str
) -> tuple[dict[str, Any], tuple[list[Outcome], float, float], dict[str, int]]:
    """Load one deployment for one round; return its figures, its window and images served."""
    started = deployment.server.started
    before = deployment.served()
    loop = ClosedLoop(
        deployment.server.predict_url,
        body,
        content_type,
        config.clients,
        RAMP_S + config.round_s + 5,
        MAX_REQUESTS,
    )
    with loop:
        loadgen.pause(RAMP_S)
        cpu_before = sum(cpu_by_role(started, onemodel_role).values()) + _own_cpu_s()
        busy_before, start_s = machine_busy_s(), time.monotonic()
        loadgen.pause(config.round_s)
        end_s = time.monotonic()
        busy = machine_busy_s() - busy_before
        own = _own_cpu_s()
        ours = sum(cpu_by_role(started, onemodel_role).values()) + own - cpu_before
    outcomes = loop.outcomes()
    delta = pool_figures.served_delta(before, deployment.served())
    entry = pool_figures.window_figures(outcomes, start_s, end_s)
    entry["other_cpu_share"] = other_cpu_share(busy, ours, end_s - start_s)
    entry["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return entry, (outcomes, start_s, end_s), delta


def _fault(  # noqa: PLR0917
    deployment: Deployment,
    name: str,
    signum: signal.Signals,
    index: int,
    config: PoolConfig,
    body: bytes,
    content_type: str,
    log: Log,
) -> dict[str, Any]:
    """Under load, send signum to replica index; return what clients saw until it served again."""
    try:
        deployment.wait_all_ready(RECOVERY_MAX_S)
    except TimeoutError as error:
        return {"error": str(error)}
    servers = deployment.model_servers()
    if len(servers) != deployment.replicas:
        return {"error": f"found {len(servers)} model servers, not {deployment.replicas}"}
    address = sorted(servers)[index]
    victim = servers[address]
    log_offset = deployment.server.started.log_path.stat().st_size
    loop = ClosedLoop(
        deployment.server.predict_url,
        body,
        content_type,
        config.clients,
        FAULT_MAX_S,
        MAX_REQUESTS,
        pause_after_failure_s=PAUSE_AFTER_FAILURE_S,
    )
    with loop:
        load_start = time.monotonic()
        loadgen.pause(BEFORE_FAULT_S)
        hit = time.monotonic()
        victim.send_signal(signum)
        exited = _wait_gone(victim, RECOVERY_MAX_S)
        restarted, ready, serving = _watch_return(deployment, address, victim.pid, hit, loop)
        loadgen.pause(AFTER_FAULT_S)
        load_end = time.monotonic()
    marks = pool_figures.EventMarks(load_start, hit, exited, restarted, ready, serving, load_end)
    figures = pool_figures.event_figures(loop.outcomes(), marks)
    figures["victim"] = {"index": index, "address_file": Path(address).name, "pid": victim.pid}
    if signum == signal.SIGTERM:
        figures["drain_logged"] = DRAIN_LOG_LINE in _log_since(deployment, log_offset)
    log(
        f"pool: {deployment.name} {name}: {figures['requests']} requests, "
        f"non-200 {figures['non_200']} {figures['statuses']}, longest gap without a 200 "
        f"{figures['longest_gap_without_200_s']:.2f} s, p95 during "
        f"{figures['latency_ms_during']['p95']} ms, ready after {figures['ready_s']} s, "
        f"serving after {figures['serving_s']} s"
    )
    return figures


def _wait_gone(process: psutil.Process, timeout_s: float) -> float | None:
    """Return when the process was gone (or a zombie), None if it outlived timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return time.monotonic()
        except psutil.NoSuchProcess:
            return time.monotonic()
        time.sleep(0.01)
    return None


def _watch_return(
    deployment: Deployment, address: str, old_pid: int, hit: float, loop: ClosedLoop
) -> tuple[float | None, float | None, float | None]:
    """Return when the replica at address was restarted, ready in /readyz, and serving."""
    restarted = ready = serving = None
    ready_count = 0
    while time.monotonic() < hit + RECOVERY_MAX_S and loop.running():
        if restarted is None:
            current = deployment.model_servers().get(address)
            if current is not None and current.pid != old_pid:
                restarted = time.monotonic()
        if restarted is not None:
            replica = deployment.replica_view().get(address)
            now = time.monotonic()
            if replica is not None and ready is None and replica["ready"]:
                ready, ready_count = now, int(replica["images_served"])
            elif replica is not None and ready is not None:
                if int(replica["images_served"]) > ready_count:
                    serving = now
                    break
        loadgen.pause(POLL_S)
    return restarted, ready, serving


def _log_since(deployment: Deployment, offset: int) -> str:
    with deployment.server.started.log_path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- command line -----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--engine",
        choices=("tensorflow", "openvino", "auto"),
        default="auto",
        help="MODEL_ENGINE (default auto, the service's default)",
    )
    parser.add_argument("--web-concurrency", type=int, default=4, help="Gunicorn workers")
    parser.add_argument("--web-threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=2, help="steady rounds per deployment")
    parser.add_argument("--round-s", type=float, default=5.0, help="seconds per steady round")
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "pool.json", help="where to write the JSON"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure, print the tables, write the JSON."""
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds into the launchers, which stop every process

    signal.signal(signal.SIGTERM, stop)
    config = PoolConfig(
        model_path=str(assets.ensure_tiny_model()),
        upload=assets.ensure_uploads()["224"].path,
        log_dir=assets.CACHE / "logs" / f"pool-{stamp}",
        engine=args.engine,
        workers=args.web_concurrency,
        threads=args.web_threads,
        clients=args.clients,
        rounds=args.rounds,
        round_s=args.round_s,
    )
    log_line(f"pool benchmark, logs in {config.log_dir}")
    try:
        results = measure(config)
    except KeyboardInterrupt:
        log_line("interrupted: every started process was stopped")
        return 130
    results["meta"] = {
        "stamp": stamp,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": environment.machine(),
        "versions": environment.versions(),
    }
    print("\n".join(pool_report.text_lines(results, report.text_table)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    log_line(f"wrote {args.output} in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
