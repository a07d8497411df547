"""Drive a server with wrk (closed loop, 127.0.0.1 only) and turn its output into figures."""

from __future__ import annotations

import bisect
import json
import resource
import shutil
import subprocess
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).resolve().parent / "post_file.lua"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
# A request that takes longer than this counts as a socket error (timeout).
REQUEST_TIMEOUT_S = 60
MAX_DRAIN_S = 30.0
# The steady-state window starts after this share of the run (and after the first round of
# c completions): at the start all c requests arrive at once, which is not steady.
STEADY_START_SHARE = 0.2
# Latencies summing to more than this share of c x duration cannot be right (a closed loop
# has at most c requests in flight): wrk mis-measured them.
MAX_LATENCY_COVERAGE = 1.10


@dataclass(frozen=True)
class LoadResult:
    """One measured point: throughput, latency percentiles and errors."""

    concurrency: int
    duration_s: float
    requests: int
    ok: int
    errors: int
    non2xx: int
    socket_errors: int
    images_per_s: float  # the best estimate, by rate_method
    rate_method: str  # "steady", else "littles_law", else "counted"
    images_per_s_steady: float | None
    images_per_s_littles_law: float
    images_per_s_counted: float
    steady_window_s: float
    latency_coverage: float  # sum of latencies / (c x duration); <= 1 when consistent
    latency_ms: dict[str, float]
    wrk_cpu_s: float

    def as_dict(self) -> dict[str, Any]:
        """Return the point as plain JSON data."""
        return dict(self.__dict__)


def check_local(url: str) -> None:
    """Refuse to send load anywhere but 127.0.0.1."""
    host = urllib.parse.urlsplit(url).hostname
    if host != "127.0.0.1":
        raise ValueError(f"load goes to 127.0.0.1 only, not {host!r}")


def run_wrk(url: str, image: Path, concurrency: int, duration_s: float) -> LoadResult:
    """Run wrk for duration_s with `concurrency` connections; return the parsed result."""
    check_local(url)
    threads = min(concurrency, 2)
    argv = [
        WRK,
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={REQUEST_TIMEOUT_S}s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(image),
    ]
    before = _children_cpu_s()
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration_s + REQUEST_TIMEOUT_S + 30,
        check=False,
    )
    wrk_cpu_s = _children_cpu_s() - before
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse_wrk(completed.stdout, concurrency, wrk_cpu_s)


def parse_wrk(stdout: str, concurrency: int, wrk_cpu_s: float = 0.0) -> LoadResult:
    """Build a LoadResult from the JSON line post_file.lua prints in done()."""
    line = next(text for text in reversed(stdout.splitlines()) if text.startswith("{"))
    raw = json.loads(line)
    duration_s = raw["duration_us"] / 1e6
    requests = int(raw["requests"])
    ok = max(0, requests - int(raw["non2xx"]))
    success = ok / requests if requests else 0.0
    latency = {key: value / 1000.0 for key, value in raw["latency_us"].items()}
    counted = ok / duration_s if duration_s > 0 else 0.0
    little = littles_law_rate(concurrency, latency["mean"]) * success
    coverage = (
        requests * latency["mean"] / 1000.0 / (concurrency * duration_s) if duration_s else 0.0
    )
    steady, window = steady_rate(raw.get("completions_s", []), concurrency, duration_s)
    if steady is not None:
        rate, method = steady * success, "steady"
    elif coverage <= MAX_LATENCY_COVERAGE:
        rate, method = little, "littles_law"
    else:
        rate, method = counted, "counted"
    return LoadResult(
        concurrency=concurrency,
        duration_s=round(duration_s, 3),
        requests=requests,
        ok=ok,
        errors=int(raw["errors"]),
        non2xx=int(raw["non2xx"]),
        socket_errors=int(raw["socket_errors"]),
        images_per_s=round(rate, 3),
        rate_method=method,
        images_per_s_steady=None if steady is None else round(steady * success, 3),
        images_per_s_littles_law=round(little, 3),
        images_per_s_counted=round(counted, 3),
        steady_window_s=round(window, 3),
        latency_coverage=round(coverage, 3),
        latency_ms={key: round(value, 3) for key, value in latency.items()},
        wrk_cpu_s=round(wrk_cpu_s, 3),
    )


def steady_rate(
    completions_s: list[float], concurrency: int, duration_s: float
) -> tuple[float | None, float]:
    """Return (completions per second in steady state, the window's length in seconds).

    The window starts at a completion after the first round and after STEADY_START_SHARE of
    the run, and spans a whole number of rounds of `concurrency` completions. A closed loop
    completes one round per cycle whether its responses come one by one or in batches, so
    this needs no correction for requests cut off by wrk's deadline, nor for bursts.
    None when the run holds less than one round after the start.
    """
    times = sorted(completions_s)
    first = max(concurrency, bisect.bisect_left(times, STEADY_START_SHARE * duration_s))
    rounds = (len(times) - 1 - first) // concurrency
    if first >= len(times) or rounds < 1:
        return None, 0.0
    count = rounds * concurrency
    window = times[first + count] - times[first]
    return (count / window, window) if window > 0 else (None, 0.0)


def littles_law_rate(concurrency: int, mean_latency_ms: float) -> float:
    """Return the rate of a closed loop with `concurrency` requests in flight: N / mean latency.

    wrk's mean includes the first round, whose requests wait less than in steady state,
    so this overestimates when a request takes a large share of the run.
    """
    if mean_latency_ms <= 0:
        return 0.0
    return concurrency / (mean_latency_ms / 1000.0)


def drain_time_s(result: LoadResult) -> float:
    """Return how long requests abandoned by wrk at its deadline may still keep the server busy."""
    return min(MAX_DRAIN_S, result.latency_ms.get("max", 0.0) / 1000.0 + 0.25)


def warm_up(
    url: str, image: Path, concurrency: int, rounds: int = 2, timeout_s: float = 120
) -> int:
    """Send a few sequential then `rounds` x concurrency parallel requests; return failures."""
    check_local(url)
    body, content_type = multipart(image.read_bytes(), image.name)
    failures = sum(not _post(url, body, content_type, timeout_s) for _ in range(2))
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(rounds):
            results = pool.map(
                lambda _: _post(url, body, content_type, timeout_s), range(concurrency)
            )
            failures += sum(not ok for ok in results)
    return failures


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    """Return a multipart/form-data body with the file in field ``file``, and its type."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + data + tail, f"multipart/form-data; boundary={boundary}"


def _post(url: str, body: bytes, content_type: str, timeout_s: float) -> bool:
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
            return 200 <= response.status < 300
    except OSError:
        return False


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pause(seconds: float) -> None:
    """Sleep (a named step, so a run's timeline reads clearly)."""
    time.sleep(max(0.0, seconds))
