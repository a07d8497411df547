"""Execute a plan: the ceiling subprocess, each served system in turn, the onemodel sweep."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loadgen
from assets import CACHE, Upload
from engine_panels import EnginePanelRunner
from plan import Panel, Plan, SweepRun, SystemRun
from processes import (
    Launcher,
    cpu_snapshot,
    cpu_spent_by_role,
    machine_busy_s,
    memory_by_role,
    other_cpu_share,
)
from systems import (
    BASELINES,
    PYTHON,
    WEB_TIER_ROLES,
    Server,
    ServerSpec,
    base_env,
    ready_fields,
    start_server,
    with_path,
)

START_TIMEOUT_S = 900.0
CEILING_TIMEOUT_S = 900.0
# A short wrk run after the warm-up requests: the first seconds of load on a fresh server
# are slower (and wrk's latency accounting is unreliable in them). VGG16 needs none: its
# warm-up requests already take seconds.
WARM_WRK_S = {"tiny": 2.0, "vgg16": 0.0}
WARM_WRK_DEFAULT_S = 2.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunConfig:
    """Inputs of a run that are not part of the plan."""

    model_paths: dict[str, str]  # "tiny" -> .keras path, "vgg16" -> "vgg16"
    uploads: dict[str, Upload]
    web_workers: int
    web_threads: int
    log_dir: Path
    engine: str = "tensorflow"  # onemodel's MODEL_ENGINE (bench/run.py --engine)
    # onemodel's converted models (MODEL_CACHE_DIR): the bench's own, kept between runs.
    model_cache_dir: Path = CACHE / "model-cache"
    calibration_dir: Path = CACHE / "calibration"  # MODEL_CALIBRATION_DIR for int8


def log_line(text: str) -> None:
    """Print one progress line with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Runner:
    """Runs a plan with one Launcher, so every process it starts is stopped at the end."""

    def __init__(self, plan: Plan, config: RunConfig, log: Log = log_line) -> None:
        self.plan = plan
        self.config = config
        self.log = log
        self.launcher = Launcher(config.log_dir)

    def run(self) -> dict[str, Any]:
        """Measure everything in the plan; return the results as plain data."""
        with self.launcher.session():
            panels = [self._run_panel(panel) for panel in self.plan.panels]
            engines = [EnginePanelRunner(self).run(panel) for panel in self.plan.engines]
            sweep = [self._run_sweep(run) for run in self.plan.sweep]
        return {"panels": panels, "engines": engines, "sweep": sweep}

    # --- panels -----------------------------------------------------------------------

    def _run_panel(self, panel: Panel) -> dict[str, Any]:
        self.log(f"== {panel.key}")
        result: dict[str, Any] = {
            "model": panel.model,
            "precision": panel.precision,
            "duration_s": panel.duration_s,
            "ceiling": self._run_ceiling(panel),
            "systems": {},
        }
        for system_run in panel.systems:
            result["systems"][system_run.system] = self._run_system(panel, system_run)
        return result

    def _run_ceiling(self, panel: Panel) -> dict[str, Any]:
        output = self.config.log_dir / f"ceiling-{panel.model}-{panel.precision}.json"
        argv = [
            PYTHON,
            str(BASELINES / "ceiling.py"),
            "--model",
            self.config.model_paths[panel.model],
            "--precision",
            panel.precision,
            "--batches",
            ",".join(str(batch) for batch in panel.ceiling_batches),
            "--duration",
            str(panel.ceiling_duration_s),
            "--output",
            str(output),
        ]
        env = with_path(base_env())
        busy_before, wall_before = machine_busy_s(), time.monotonic()
        children_before = _children_cpu_s()
        started = self.launcher.start(f"ceiling-{panel.model}-{panel.precision}", argv, env)
        try:
            code = started.process.wait(CEILING_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            self.launcher.stop(started)
        share = other_cpu_share(
            machine_busy_s() - busy_before,
            _children_cpu_s() - children_before,
            time.monotonic() - wall_before,
        )
        if code != 0 or not output.is_file():
            error = f"ceiling failed (exit {code}):\n{started.log_tail(15)}"
            self.log(error)
            return {"error": error}
        result: dict[str, Any] = json.loads(output.read_text())
        result["other_cpu_share"] = share
        self.log(f"ceiling {panel.key}: other work used {100 * share:.0f}% CPU meanwhile")
        for batch in result["batches"]:
            self.log(
                f"ceiling {panel.key} b={batch['batch']}: {batch['images_per_s']:.2f} img/s, "
                f"p50 {batch['latency_ms_p50']:.1f} ms"
            )
        return result

    def _run_system(self, panel: Panel, system_run: SystemRun) -> dict[str, Any]:
        spec = self._spec(
            panel.model, panel.precision, self.config.web_workers, self.config.web_threads
        )
        config = (
            {"workers": spec.workers, "threads": spec.threads}
            if system_run.system == "onemodel"
            else {}
        )
        started_at = time.monotonic()
        try:
            server = start_server(system_run.system, spec, self.launcher, START_TIMEOUT_S)
        except (RuntimeError, TimeoutError, OSError) as error:
            self.log(f"{system_run.system} {panel.key} did not start: {error}")
            return {"error": str(error), "config": config}
        try:
            startup_s = round(time.monotonic() - started_at, 2)
            self.log(f"{system_run.system} {panel.key} ready in {startup_s:.1f} s")
            points = []
            for upload in system_run.uploads:
                self.warm(server, panel.model, upload, max(system_run.concurrencies))
                for concurrency in system_run.concurrencies:
                    points.append(
                        self.measure(server, upload, concurrency, panel.duration_s, panel.key)
                    )
            memory = memory_by_role(server.started, server.roles)
            self.log(
                f"{system_run.system} {panel.key} total RSS {memory['rss_bytes'] / 2**20:.0f} MiB"
            )
            return {
                "config": config,
                "startup_s": startup_s,
                "ready_info": ready_fields(server.ready_info),
                "points": points,
                "memory": memory,
            }
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            self.log(f"{system_run.system} {panel.key} failed: {error}")
            return {"error": str(error), "config": config}
        finally:
            self.launcher.stop(server.started)

    def measure(
        self, server: Server, upload: str, concurrency: int, duration_s: float, label: str
    ) -> dict[str, Any]:
        """Load a server with wrk at one concurrency; return the point with CPU by role."""
        image = self.config.uploads[upload].path
        cpu_before = cpu_snapshot(server.started, server.roles)
        busy_before, wall_before = machine_busy_s(), time.monotonic()
        result = loadgen.run_wrk(server.predict_url, image, concurrency, duration_s)
        busy, wall = machine_busy_s() - busy_before, time.monotonic() - wall_before
        spent = cpu_spent_by_role(cpu_before, cpu_snapshot(server.started, server.roles))
        loadgen.pause(loadgen.drain_time_s(result))
        point = {"upload": upload, **result.as_dict()}
        point["cpu_ms_per_request"] = cpu_per_request(spent, result)
        if server.system == "onemodel":
            # Gunicorn's master, its workers and their decoder sandboxes: all but the model.
            point["web_tier_cpu_ms_per_request"] = round(
                sum(point["cpu_ms_per_request"].get(role, 0.0) for role in WEB_TIER_ROLES), 3
            )
        point["other_cpu_share"] = other_cpu_share(
            busy, sum(spent.values()) + result.wrk_cpu_s, wall
        )
        self.log(
            f"{server.system} {label} {upload} c={concurrency}: {result.images_per_s:.2f} img/s "
            f"({result.rate_method}; Little {result.images_per_s_littles_law:.2f}, counted "
            f"{result.images_per_s_counted:.2f}), p50 {result.latency_ms['p50']:.1f} ms, "
            f"p95 {result.latency_ms['p95']:.1f} ms, p99 {result.latency_ms['p99']:.1f} ms, "
            f"errors {result.errors}, other work {100 * point['other_cpu_share']:.0f}% CPU"
        )
        return point

    def warm(self, server: Server, model: str, upload: str, concurrency: int) -> None:
        """Warm a fresh server up: a few requests, then (small models) a short wrk run."""
        image = self.config.uploads[upload].path
        failures = loadgen.warm_up(server.predict_url, image, concurrency)
        if failures:
            self.log(f"warning: {failures} warm-up requests to {server.system} failed")
        seconds = WARM_WRK_S.get(model, WARM_WRK_DEFAULT_S)
        if seconds > 0:
            warm = loadgen.run_wrk(server.predict_url, image, concurrency, seconds)
            loadgen.pause(loadgen.drain_time_s(warm))

    # --- sweep ------------------------------------------------------------------------

    def _run_sweep(self, run: SweepRun) -> dict[str, Any]:
        spec = self._spec(run.model, run.precision, run.workers, run.threads)
        entry: dict[str, Any] = {
            "model": run.model,
            "precision": run.precision,
            "workers": run.workers,
            "threads": run.threads,
            "upload": run.upload,
            "concurrency": run.concurrency,
        }
        try:
            server = start_server("onemodel", spec, self.launcher, START_TIMEOUT_S)
        except (RuntimeError, TimeoutError, OSError) as error:
            return {**entry, "error": str(error)}
        try:
            self.warm(server, run.model, run.upload, run.concurrency)
            label = f"{run.model}/{run.precision} w{run.workers}t{run.threads}"
            point = self.measure(server, run.upload, run.concurrency, run.duration_s, label)
            memory = memory_by_role(server.started, server.roles)
            return {**entry, "point": point, "memory": memory}
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            return {**entry, "error": str(error)}
        finally:
            self.launcher.stop(server.started)

    def _spec(self, model: str, precision: str, workers: int, threads: int) -> ServerSpec:
        return ServerSpec(
            self.config.model_paths[model],
            precision,
            workers,
            threads,
            engine=self.config.engine,
            cache_dir=str(self.config.model_cache_dir),
        )


def cpu_per_request(spent: dict[str, float], result: loadgen.LoadResult) -> dict[str, float]:
    """Return CPU milliseconds per request by role, wrk's own included."""
    requests = max(result.requests, 1)
    spent = {**spent, "wrk": result.wrk_cpu_s}
    return {role: round(1000 * seconds / requests, 3) for role, seconds in sorted(spent.items())}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
