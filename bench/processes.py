"""Start, watch and stop the processes the benchmark measures; read their memory and CPU."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

Roles = Callable[[psutil.Process, int], str]
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Started:
    """A process started in its own session, its log, and every descendant seen so far.

    Descendants are remembered because some leave the group (onemodel's model server runs
    in its own session): stop() ends each one by pid if it outlives the group.
    """

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        """Return whether the main process is still alive."""
        return self.process.poll() is None

    def tree(self) -> list[psutil.Process]:
        """Return the main process and its live descendants, remembering them."""
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            processes = []
        for process in processes:
            self.seen.setdefault(process.pid, process)
        return processes

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the process's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the group, wait, SIGKILL what is left, then any remembered descendant."""
        self.tree()
        if self.running():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.process.wait(10)
        _signal_group(self.pid, signal.SIGKILL)
        _end_leftovers(list(self.seen.values()), timeout_s)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _end_leftovers(processes: list[psutil.Process], timeout_s: float) -> None:
    alive = [process for process in processes if process.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, still = psutil.wait_procs(alive, timeout=timeout_s)
    for process in still:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(still, timeout=5)


class Launcher:
    """Starts processes with logs under one folder and stops all of them on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[Started] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None = None,
        pipes: bool = False,
    ) -> Started:
        """Start argv in a new session (its own process group), output to <log_dir>/<name>.log.

        With ``pipes``, stdin and stdout are pipes to talk to the process; stderr is the log.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log if pipes else subprocess.STDOUT,
                start_new_session=True,
            )
        started = Started(name, process, log_path)
        self._started.append(started)
        return started

    def stop(self, started: Started) -> None:
        """Stop one process tree and forget it."""
        started.stop()
        if started in self._started:
            self._started.remove(started)

    def stop_all(self) -> None:
        """Stop every process tree still known, newest first."""
        while self._started:
            self.stop(self._started[-1])

    @contextlib.contextmanager
    def session(self) -> Iterator[Launcher]:
        """Yield the launcher; stop everything it started on exit, even on error or Ctrl-C."""
        try:
            yield self
        finally:
            self.stop_all()


def get_json(url: str, timeout_s: float = 5.0) -> tuple[int, dict[str, Any]]:
    """GET a URL on 127.0.0.1; return (status, JSON body or {})."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


def wait_ready(
    started: Started, url: str, timeout_s: float, extra: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Poll url until it answers 200 (and extra() holds); raise if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not started.running():
            raise RuntimeError(f"{started.name} exited early:\n{started.log_tail()}")
        with contextlib.suppress(OSError, ValueError):
            status, body = get_json(url, timeout_s=2.0)
            if status == 200 and (extra is None or extra()):
                return body
        time.sleep(0.25)
    raise TimeoutError(f"{started.name} was not ready after {timeout_s:g} s:\n{started.log_tail()}")


def memory_by_role(started: Started, roles: Roles) -> dict[str, Any]:
    """Return total and per-role RSS, PSS and USS of the process tree (each pid once)."""
    totals = {"rss_bytes": 0, "pss_bytes": 0, "uss_bytes": 0, "processes": 0}
    by_role: dict[str, dict[str, int]] = {}
    for process in {process.pid: process for process in started.tree()}.values():
        try:
            info = process.memory_full_info()
            role = roles(process, started.pid)
        except psutil.Error:
            continue
        entry = by_role.setdefault(role, {"rss_bytes": 0, "pss_bytes": 0, "processes": 0})
        for key, value in (("rss_bytes", info.rss), ("pss_bytes", info.pss)):
            entry[key] += value
            totals[key] += value
        entry["processes"] += 1
        totals["uss_bytes"] += info.uss
        totals["processes"] += 1
    return {**totals, "roles": by_role}


def cpu_by_role(started: Started, roles: Roles) -> dict[str, float]:
    """Return CPU seconds (user + system) used so far by each role of the tree."""
    seconds: dict[str, float] = {}
    for process in started.tree():
        try:
            times = process.cpu_times()
            role = roles(process, started.pid)
        except psutil.Error:
            continue
        seconds[role] = seconds.get(role, 0.0) + times.user + times.system
    return seconds


@dataclass(frozen=True)
class CpuSample:
    """One process's CPU seconds at one moment, and what it needs to be diffed later."""

    role: str
    parent: int
    own_s: float  # user + system of the process itself
    children_s: float  # user + system of its children that exited and were waited for


def cpu_snapshot(started: Started, roles: Roles) -> dict[int, CpuSample]:
    """Return the CPU seconds of every process of the tree so far, by pid."""
    samples: dict[int, CpuSample] = {}
    for process in started.tree():
        try:
            with process.oneshot():
                times = process.cpu_times()
                parent = process.ppid()
            role = roles(process, started.pid)
        except psutil.Error:
            continue
        own = times.user + times.system
        children = getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
        samples[process.pid] = CpuSample(role, parent, own, children)
    return samples


def cpu_spent_by_role(
    before: Mapping[int, CpuSample], after: Mapping[int, CpuSample]
) -> dict[str, float]:
    """Return the CPU seconds each role used between two snapshots, diffed pid by pid.

    Diffing per pid, not per role, keeps a process that exits in between (a decoder killed
    and replaced) from subtracting its whole life from its role. Its last seconds come back
    through its parent's children times once the parent has waited for it: that growth,
    less what the child had already used at the first snapshot, goes to the exited child's
    role. A process started in between counts from its start.
    """
    spent: dict[str, float] = {}
    gone = [sample for pid, sample in before.items() if pid not in after]
    for pid, sample in after.items():
        old = before.get(pid)
        spent[sample.role] = spent.get(sample.role, 0.0) + sample.own_s - (old.own_s if old else 0)
        if old is None:
            continue
        children = [child for child in gone if child.parent == pid]
        reaped = sample.children_s - old.children_s - sum(child.own_s for child in children)
        if reaped > 0:
            child_roles = {child.role for child in children}
            role = child_roles.pop() if len(child_roles) == 1 else sample.role
            spent[role] = spent.get(role, 0.0) + reaped
    return spent


def machine_busy_s() -> float:
    """Return the CPU seconds every process of the machine has used so far (all cores)."""
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def other_cpu_share(busy_s: float, ours_s: float, wall_s: float) -> float:
    """Return the share (0-1) of the machine's cores used by processes not under test."""
    cores = psutil.cpu_count() or 1
    if wall_s <= 0:
        return 0.0
    return round(min(1.0, max(0.0, (busy_s - ours_s) / (wall_s * cores))), 3)


def cmdline_text(process: psutil.Process) -> str:
    """Return a process's command line as one string ('' if unreadable)."""
    with contextlib.suppress(psutil.Error):
        return " ".join(process.cmdline())
    return ""
