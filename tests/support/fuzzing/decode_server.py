"""The fuzzer's child process: forks one limited grandchild per input and reports what it did.

Run as ``python -m tests.support.fuzzing.decode_server TARGET`` (TARGET is
``module:function``, a callable taking the upload bytes). It reads length-prefixed pickled
requests on stdin and writes pickled outcomes on stdout. The decoder itself runs in a fresh
fork per input with RLIMIT_AS, RLIMIT_CPU and no core dumps, so a crash, a hang or a runaway
allocation costs one grandchild; its stderr is captured because OpenCV logs the allocation
failures it then swallows.
"""

from __future__ import annotations

import importlib
import os
import pickle
import resource
import select
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, BinaryIO

# OpenCV logs the C++ exceptions imdecode swallows: an allocation the address-space limit
# refused shows up only here.
_ALLOCATION_FAILURES = ("Insufficient memory", "Failed to allocate", "bad_alloc", "MemoryError")


def load_target(target: str) -> Callable[[bytes], Any]:
    """Import ``module:function``."""
    module_name, _, name = target.partition(":")
    function: Callable[[bytes], Any] = getattr(importlib.import_module(module_name), name)
    return function


def _status_kb(field: str, pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _classify_exception(error: BaseException) -> dict[str, Any]:
    from onemodel.errors import OneModelError  # noqa: PLC0415

    if isinstance(error, OneModelError) and 400 <= error.status < 500:
        return {"kind": "rejected", "detail": f"{error.status} {error.code}"}
    message = str(error).splitlines()[0][:200] if str(error) else ""
    return {"kind": "exception", "detail": f"{type(error).__qualname__}: {message}"}


def _grandchild(
    decode: Callable[[bytes], Any], data: bytes, limits: dict[str, float], write_fd: int
) -> None:
    """Decode once under limits and write a pickled result to write_fd (never returns)."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        address_space = _status_kb("VmSize") * 1024 + int(limits["address_space_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        cpu = int(limits["cpu_kill_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        try:
            value = decode(data)
        except BaseException as error:  # the point: see everything the decoder raises
            result = _classify_exception(error)
        else:
            shape = getattr(value, "shape", None)
            result = {"kind": "ok", "detail": f"shape {tuple(shape) if shape else None}"}
        os.write(write_fd, pickle.dumps(result))
    finally:
        os._exit(0)


def _collect(pid: int, read_fd: int, wall_timeout_s: float) -> tuple[bytes, bool, int]:
    """Read the result until EOF or the deadline; return (result, timed out, peak KB)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + wall_timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            # Killed for the wall-clock limit: read its peak RSS while it still exists.
            peak_kb = _status_kb("VmHWM", pid)
            os.kill(pid, signal.SIGKILL)
            return b"".join(chunks), True, peak_kb
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                return b"".join(chunks), False, 0
            chunks.append(chunk)


def _outcome(
    status: int, result: bytes, timed_out: bool, limits: dict[str, float]
) -> dict[str, Any]:
    if timed_out:
        return {"kind": "hang", "detail": f"no answer in {limits['wall_timeout_s']:g} s"}
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum == signal.SIGXCPU:
            return {"kind": "hang", "detail": f"over the {limits['cpu_kill_s']:g} s CPU limit"}
        return {"kind": "crash", "detail": signal.Signals(signum).name}
    if not result:
        return {"kind": "crash", "detail": f"exit status {os.WEXITSTATUS(status)}, no result"}
    outcome: dict[str, Any] = pickle.loads(result)
    return outcome


def _judge(
    outcome: dict[str, Any], cpu_s: float, growth: int, stderr_text: str, limits: dict[str, float]
) -> dict[str, Any]:
    """Turn an answer that came at too high a price into a hang or balloon finding."""
    if outcome["kind"] not in ("ok", "rejected"):
        return outcome
    if cpu_s > limits["hang_cpu_s"]:
        return {"kind": "hang", "detail": f"{cpu_s:.1f} s of CPU ({outcome['detail']})"}
    if growth > limits["rss_bound_bytes"]:
        return {
            "kind": "balloon",
            "detail": f"peak RSS +{growth / 2**20:.0f} MB ({outcome['detail']})",
        }
    if any(marker in stderr_text for marker in _ALLOCATION_FAILURES):
        return {
            "kind": "balloon",
            "detail": "an allocation over the address-space limit "
            f"({limits['address_space_bytes'] / 2**20:.0f} MB) failed ({outcome['detail']})",
        }
    return outcome


def run_one(
    decode: Callable[[bytes], Any], data: bytes, limits: dict[str, float]
) -> dict[str, Any]:
    """Decode data in a forked, limited grandchild; return its outcome and resource use."""
    base_rss_kb = _status_kb("VmRSS")
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as stderr_file:
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            os.dup2(stderr_file.fileno(), 2)
            _grandchild(decode, data, limits, write_fd)
        os.close(write_fd)
        result, timed_out, peak_while_running_kb = _collect(pid, read_fd, limits["wall_timeout_s"])
        _, status, usage = os.wait4(pid, 0)
        wall_s = time.monotonic() - start
        os.close(read_fd)
        stderr_file.seek(0)
        stderr_text = stderr_file.read()[-4000:].decode(errors="replace")
    cpu_s = usage.ru_utime + usage.ru_stime
    growth = max(0, max(usage.ru_maxrss, peak_while_running_kb) - base_rss_kb) * 1024
    outcome = _outcome(status, result, timed_out, limits)
    outcome = _judge(outcome, cpu_s, growth, stderr_text, limits)
    outcome.update(
        cpu_s=round(cpu_s, 3),
        wall_s=round(wall_s, 3),
        rss_growth_bytes=growth,
        stderr=stderr_text[-1000:],
    )
    return outcome


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (length,) = struct.unpack(">I", header)
    return stream.read(length)


def _write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(struct.pack(">I", len(payload)) + payload)
    stream.flush()


def main() -> None:
    """Serve decode requests until stdin closes."""
    decode = load_target(sys.argv[1])
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests_in = sys.stdin.buffer
    _write_frame(protocol_out, pickle.dumps({"ready": True, "pid": os.getpid()}))
    while True:
        frame = _read_frame(requests_in)
        if frame is None:
            return
        data, limits = pickle.loads(frame)
        _write_frame(protocol_out, pickle.dumps(run_one(decode, data, limits)))


if __name__ == "__main__":
    main()
