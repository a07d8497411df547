"""Run an engine panel: conversions prepared, ceilings interleaved, served engines in turn."""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import time
from typing import TYPE_CHECKING, Any

import psutil
from plan import EnginePanel, EngineSystem
from processes import Started, machine_busy_s, memory_by_role, other_cpu_share
from systems import (
    BASELINES,
    PYTHON,
    ROOT,
    Server,
    ServerSpec,
    ready_fields,
    start_server,
    with_path,
)

if TYPE_CHECKING:
    from runner import Runner

# A cold OpenVINO conversion (TensorFlow, Keras, a trace, two verification passes) takes
# minutes on a loaded small machine; a warm one, seconds. int8 also calibrates, measures and,
# below its bar, retries accuracy-aware: with random weights (75 % top-1 after a 21 s PTQ)
# EfficientNetB0's retry ran over 14 minutes on a loaded 2-core machine without finishing.
# So int8 gets a bound; running out is recorded as its reason, with the last log line.
PREPARE_TIMEOUT_S = 1200.0
INT8_PREPARE_TIMEOUT_S = 150.0
CEILING_READY_TIMEOUT_S = 900.0
# A timed window may overrun its duration by a few calls (VGG16 at batch 8: seconds each).
CEILING_REPLY_SLACK_S = 300.0
START_TIMEOUT_S = 900.0


class CeilingProcess:
    """One engine's ceiling process (bench/baselines/engine_ceiling.py) and its JSON lines."""

    def __init__(self, started: Started, system: EngineSystem) -> None:
        self.started = started
        self.system = system
        self.ready: dict[str, Any] = {}

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Return the process's description of what it loaded, once it has warmed up."""
        self.ready = self._read(timeout_s)
        return self.ready

    def time_batch(self, batch: int, duration_s: float) -> dict[str, Any]:
        """Time one batch size for duration_s; return calls, seconds and latencies."""
        stdin = self.started.process.stdin
        if stdin is None:
            raise RuntimeError(f"{self.started.name} has no stdin")
        command = {"batch": batch, "duration_s": duration_s, "min_calls": 2}
        try:
            stdin.write((json.dumps(command) + "\n").encode())
            stdin.flush()
        except OSError as error:
            raise RuntimeError(f"{self.started.name} stopped: {error}") from None
        return self._read(duration_s + CEILING_REPLY_SLACK_S)

    def _read(self, timeout_s: float) -> dict[str, Any]:
        stdout = self.started.process.stdout
        if stdout is None:
            raise RuntimeError(f"{self.started.name} has no stdout")
        readable, _, _ = select.select([stdout], [], [], timeout_s)
        line = stdout.readline() if readable else b""
        if not line:
            reason = "exited" if readable else f"did not answer within {timeout_s:g} s"
            raise RuntimeError(f"{self.started.name} {reason}:\n{self.started.log_tail(15)}")
        reply: dict[str, Any] = json.loads(line)
        return reply


class EnginePanelRunner:
    """Measures one EnginePanel with the Runner's launcher, configuration and load driver."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.config = runner.config
        self.launcher = runner.launcher
        self.log = runner.log

    def run(self, panel: EnginePanel) -> dict[str, Any]:
        """Prepare, time the ceilings in rounds, serve every engine in turn; return the data."""
        self.log(f"== engines {panel.model}: {', '.join(s.key for s in panel.ceilings)}")
        result: dict[str, Any] = {
            "model": panel.model,
            "upload": panel.upload,
            "batches": list(panel.batches),
            "rounds": panel.rounds,
            "ceiling_duration_s": panel.ceiling_duration_s,
            "duration_s": panel.duration_s,
            "load_average_start": _load_average(),
            "prepare": {},
            "ceilings": {},
            "served": {},
        }
        refused: dict[str, str] = {}
        for system in panel.ceilings:
            if system.engine == "openvino":
                prepared = self._prepare(panel.model, system)
                result["prepare"][system.key] = prepared
                if "error" in prepared:
                    refused[system.key] = prepared["error"]
        workers = self._start_ceilings(panel, result["ceilings"], refused)
        try:
            self._time_ceilings(panel, workers, result["ceilings"])
            for key, worker in workers.items():
                if worker.started.running():
                    result["ceilings"][key]["memory"] = memory_by_role(
                        worker.started, lambda process, root: "ceiling"
                    )
            # TensorFlow's ceiling stays up: its largest batch is timed again between the
            # served rounds, so the served/ceiling ratio does not rest on a figure taken
            # minutes before the served points only.
            reference = workers.pop("tensorflow/float32", None)
            for worker in workers.values():
                self.launcher.stop(worker.started)
            self._serve(panel, result, refused, reference)
        finally:
            for worker in workers.values():
                self.launcher.stop(worker.started)
        for key, entry in result["ceilings"].items():
            _summarise_ceiling(entry, result["ceilings"].get("tensorflow/float32"), key)
        result["load_average_end"] = _load_average()
        return result

    # --- prepare and ceilings -----------------------------------------------------------

    def _spec(self, model: str, system: EngineSystem) -> ServerSpec:
        return ServerSpec(
            self.config.model_paths[model],
            system.precision,
            self.config.web_workers,
            self.config.web_threads,
            engine=system.engine,
            cache_dir=str(self.config.model_cache_dir),
            calibration_dir=str(self.config.calibration_dir),
        )

    def _prepare(self, model: str, system: EngineSystem) -> dict[str, Any]:
        """Convert (or find in the cache) the model for one precision, as onemodel would."""
        env = self._spec(model, system).model_env()
        name = f"prepare-{model}-{system.engine}-{system.precision}"
        timeout_s = INT8_PREPARE_TIMEOUT_S if system.precision == "int8" else PREPARE_TIMEOUT_S
        started_at = time.monotonic()
        started = self.launcher.start(name, [PYTHON, "-m", "onemodel", "prepare"], env, cwd=ROOT)
        try:
            code = started.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            self.launcher.stop(started)
        seconds = round(time.monotonic() - started_at, 1)
        tail = started.log_tail(8)
        if code is None:
            last = _last_onemodel_line(started.log_tail(60))
            error = f"onemodel prepare did not finish within {timeout_s:g} s; last: {last}"
            self.log(f"{model} {system.key}: {error}")
            return {"seconds": seconds, "error": error}
        if code != 0:
            error = f"{_reason(tail)} (onemodel prepare exit {code})"
            self.log(f"{model} {system.key}: {error}")
            return {"seconds": seconds, "error": error}
        summary = tail.splitlines()[-1] if tail else ""
        self.log(f"{model} {system.key}: prepared in {seconds:.0f} s ({summary})")
        return {"seconds": seconds, "summary": summary}

    def _start_ceilings(
        self, panel: EnginePanel, entries: dict[str, Any], refused: dict[str, str]
    ) -> dict[str, CeilingProcess]:
        """Start each engine's ceiling process in turn (one heavy load at a time)."""
        workers: dict[str, CeilingProcess] = {}
        for system in panel.ceilings:
            if system.key in refused:
                entries[system.key] = {"error": refused[system.key], "refused": True}
                continue
            env = with_path(self._spec(panel.model, system).model_env())
            argv = [
                PYTHON,
                str(BASELINES / "engine_ceiling.py"),
                "--batches",
                ",".join(str(batch) for batch in panel.batches),
            ]
            name = f"engine-ceiling-{panel.model}-{system.engine}-{system.precision}"
            started = self.launcher.start(name, argv, env, cwd=ROOT, pipes=True)
            worker = CeilingProcess(started, system)
            try:
                ready = worker.wait_ready(CEILING_READY_TIMEOUT_S)
            except (RuntimeError, OSError, ValueError) as error:
                self.launcher.stop(started)
                self.log(f"ceiling {panel.model} {system.key} did not start: {error}")
                entries[system.key] = {"error": str(error)}
                continue
            self.log(
                f"ceiling {panel.model} {system.key} ready in {ready['load_s']:.1f} s "
                f"(computes in {ready['inference_precision']}, cache {ready['model_cache']!r})"
            )
            entries[system.key] = {"ready": ready, "measurements": []}
            workers[system.key] = worker
        return workers

    def _time_ceilings(
        self, panel: EnginePanel, workers: dict[str, CeilingProcess], entries: dict[str, Any]
    ) -> None:
        """Time every batch size on every engine, round after round, in a rotating order."""
        for round_index in range(panel.rounds):
            for batch in panel.batches:
                for key in _rotated(list(workers), round_index):
                    if "error" in entries[key]:
                        continue
                    self._time_one(panel, workers[key], entries[key], batch, round_index)

    def _time_one(
        self,
        panel: EnginePanel,
        worker: CeilingProcess,
        entry: dict[str, Any],
        batch: int,
        round_index: int,
        *,
        during_served: bool = False,
    ) -> None:
        busy_before, wall_before = machine_busy_s(), time.monotonic()
        cpu_before = _tree_cpu_s(worker.started)
        try:
            reply = worker.time_batch(batch, panel.ceiling_duration_s)
        except (RuntimeError, OSError, ValueError) as error:
            self.log(f"ceiling {panel.model} {worker.system.key} failed: {error}")
            entry["error"] = str(error)
            return
        ours = _tree_cpu_s(worker.started) - cpu_before
        share = other_cpu_share(
            machine_busy_s() - busy_before, ours, time.monotonic() - wall_before
        )
        measurement = _measurement(reply, round_index, share, during_served)
        entry["measurements"].append(measurement)
        self.log(
            f"ceiling {panel.model} {worker.system.key} b={batch} round {round_index + 1}"
            f"{' (between served rounds)' if during_served else ''}: "
            f"{measurement['images_per_s']:.2f} img/s, other work {100 * share:.0f}% CPU"
        )

    # --- served -------------------------------------------------------------------------

    def _serve(
        self,
        panel: EnginePanel,
        result: dict[str, Any],
        refused: dict[str, str],
        reference: CeilingProcess | None,
    ) -> None:
        served: dict[str, Any] = result["served"]
        servers: dict[str, Server] = {}
        try:
            for system in panel.served:
                if system.key in refused:
                    served[system.key] = {"error": refused[system.key], "refused": True}
                    continue
                entry, server = self._start_served(panel, system)
                served[system.key] = entry
                if server is not None:
                    servers[system.key] = server
            self._served_rounds(panel, servers, served, result["ceilings"], reference)
            if reference is not None:
                # Stopped before the deployments' memory is read: it shares TensorFlow's
                # library pages with the TensorFlow model server, which would lower its PSS.
                self.launcher.stop(reference.started)
            for key, server in servers.items():
                if "error" not in served[key]:
                    served[key]["memory"] = memory_by_role(server.started, server.roles)
                    pss = served[key]["memory"]["pss_bytes"] / 2**20
                    self.log(f"onemodel {panel.model} {key}: total PSS {pss:.0f} MiB")
        finally:
            if reference is not None:
                self.launcher.stop(reference.started)
            for server in servers.values():
                self.launcher.stop(server.started)

    def _served_rounds(
        self,
        panel: EnginePanel,
        servers: dict[str, Server],
        served: dict[str, Any],
        ceilings: dict[str, Any],
        reference: CeilingProcess | None,
    ) -> None:
        """Measure each concurrency on every deployment in turn, then TensorFlow's ceiling."""
        warmed: set[str] = set()
        for index, concurrency in enumerate(panel.concurrencies):
            for key in _rotated(list(servers), index):
                if "error" in served[key]:
                    continue
                if key not in warmed:
                    warmed.add(key)
                    self._serve_point(panel, key, servers[key], served[key], None)
                self._serve_point(panel, key, servers[key], served[key], concurrency)
            reference_entry = ceilings.get("tensorflow/float32", {})
            if reference is not None and "error" not in reference_entry:
                batch = max(panel.batches)
                self._time_one(panel, reference, reference_entry, batch, index, during_served=True)

    def _start_served(
        self, panel: EnginePanel, system: EngineSystem
    ) -> tuple[dict[str, Any], Server | None]:
        spec = self._spec(panel.model, system)
        config = {"workers": spec.workers, "threads": spec.threads, "engine": system.engine}
        started_at = time.monotonic()
        try:
            server = start_server("onemodel", spec, self.launcher, START_TIMEOUT_S)
        except (RuntimeError, TimeoutError, OSError) as error:
            self.log(f"onemodel {panel.model} {system.key} did not start: {error}")
            return {"error": str(error), "config": config}, None
        startup_s = round(time.monotonic() - started_at, 2)
        self.log(f"onemodel {panel.model} {system.key} ready in {startup_s:.1f} s")
        entry = {
            "config": config,
            "startup_s": startup_s,
            "ready_info": ready_fields(server.ready_info),
            "points": [],
        }
        return entry, server

    def _serve_point(
        self,
        panel: EnginePanel,
        key: str,
        server: Server,
        entry: dict[str, Any],
        concurrency: int | None,
    ) -> None:
        """Measure one point (concurrency None: warm the deployment up instead)."""
        label = f"{panel.model} {key}"
        try:
            if concurrency is None:
                self.runner.warm(server, panel.model, panel.upload, max(panel.concurrencies))
                return
            point = self.runner.measure(server, panel.upload, concurrency, panel.duration_s, label)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            self.log(f"onemodel {label} failed: {error}")
            entry["error"] = str(error)
            return
        entry["points"].append(point)


def _measurement(
    reply: dict[str, Any], round_index: int, share: float, during_served: bool
) -> dict[str, Any]:
    latencies = reply["latencies_ms"]
    seconds = float(reply["seconds"])
    return {
        "batch": reply["batch"],
        "round": round_index + 1,
        "during_served": during_served,
        "calls": reply["calls"],
        "seconds": seconds,
        "images_per_s": round(reply["batch"] * reply["calls"] / seconds, 3) if seconds else 0.0,
        "latency_ms_p50": round(statistics.median(latencies), 3),
        "latency_ms_max": round(max(latencies), 3),
        "other_cpu_share": share,
    }


def _summarise_ceiling(entry: dict[str, Any], reference: dict[str, Any] | None, key: str) -> None:
    """Add per-batch figures over every measurement, and the per-round ratio to TensorFlow."""
    measurements = entry.get("measurements", [])
    batches = []
    for batch in dict.fromkeys(m["batch"] for m in measurements):
        mine = [m for m in measurements if m["batch"] == batch]
        calls = sum(m["calls"] for m in mine)
        seconds = sum(m["seconds"] for m in mine)
        figures: dict[str, Any] = {
            "batch": batch,
            "calls": calls,
            "seconds": round(seconds, 3),
            "images_per_s": round(batch * calls / seconds, 3) if seconds else 0.0,
            "rounds_images_per_s": [m["images_per_s"] for m in mine],
            "other_cpu_share": max(m["other_cpu_share"] for m in mine),
        }
        if reference is not None and key != "tensorflow/float32":
            ratios = _round_ratios(mine, reference.get("measurements", []), batch)
            if ratios:
                figures["ratio_to_tensorflow_rounds"] = ratios
                figures["ratio_to_tensorflow_median"] = round(statistics.median(ratios), 3)
        batches.append(figures)
    entry["batches"] = batches


def _round_ratios(
    mine: list[dict[str, Any]], reference: list[dict[str, Any]], batch: int
) -> list[float]:
    """Return this engine's img/s over TensorFlow's, round by round (same batch, same round)."""
    theirs = {
        m["round"]: m["images_per_s"]
        for m in reference
        if m["batch"] == batch and not m["during_served"]
    }
    return [
        round(m["images_per_s"] / theirs[m["round"]], 3)
        for m in mine
        if not m["during_served"] and theirs.get(m["round"])
    ]


def _rotated(keys: list[str], by: int) -> list[str]:
    """Return keys rotated by `by`: who goes first changes from round to round."""
    if not keys:
        return keys
    shift = by % len(keys)
    return keys[shift:] + keys[:shift]


def _tree_cpu_s(started: Started) -> float:
    total = 0.0
    for process in started.tree():
        try:
            times = process.cpu_times()
        except psutil.Error:  # gone
            continue
        total += times.user + times.system
    return total


def _reason(tail: str) -> str:
    """Return the last meaningful line of a failed command's log."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if not lines:
        return "no output"
    # argparse's "onemodel prepare: error: ..." and the logger's "... ERROR name: ...".
    return lines[-1].split(" error: ", 1)[-1].split(" ERROR ", 1)[-1][:400]


def _last_onemodel_line(tail: str) -> str:
    """Return onemodel's last log message (NNCF's progress bars come after it)."""
    lines = [line for line in tail.splitlines() if " onemodel." in line]
    return _reason(lines[-1]) if lines else _reason(tail)


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]
