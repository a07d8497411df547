"""Run inputs through a decode callable in a limited child process; classify what happened."""

from __future__ import annotations

import pickle
import struct
import subprocess
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import IO, Any

from tests.support.fuzzing.targets import DEFAULT_TARGET
from tests.support.processes import PYTHON, ROOT, base_env

# Outcome kinds: "ok" and "rejected" (a documented 4xx OneModelError) are fine; the rest are
# findings.
FINDING_KINDS = ("crash", "hang", "balloon", "exception")


@dataclass(frozen=True)
class Limits:
    """What one decode may use before it counts as a finding."""

    rss_bound_bytes: int = 300 * 2**20  # peak RSS growth: over this, a balloon
    address_space_bytes: int = 1536 * 2**20  # RLIMIT_AS headroom: protects the host
    hang_cpu_s: float = 2.0  # CPU time: over this, a hang (a time bomb)
    cpu_kill_s: float = 4.0  # RLIMIT_CPU: killed here
    wall_timeout_s: float = 10.0  # killed here (a decoder that sleeps or deadlocks)


@dataclass(frozen=True)
class Outcome:
    """What decoding one input did."""

    kind: str  # ok, rejected, crash, hang, balloon, exception
    detail: str
    cpu_s: float
    wall_s: float
    rss_growth_bytes: int
    stderr: str

    @property
    def is_finding(self) -> bool:
        return self.kind in FINDING_KINDS

    @property
    def signature(self) -> str:
        """What groups findings of one bug: the kind and the detail without numbers."""
        if self.kind == "balloon":
            return "balloon:" + ("address-space" if "address-space" in self.detail else "rss")
        if self.kind == "hang":
            return "hang"
        if self.kind == "exception":
            return "exception:" + self.detail.split(":")[0]
        return f"{self.kind}:{self.detail}"

    def summary(self) -> dict[str, Any]:
        fields = asdict(self)
        fields.pop("stderr")
        return fields


class DecodeRunner:
    """A decode_server child: feed it inputs with run(); restarts itself if it ever dies."""

    def __init__(self, target: str = DEFAULT_TARGET, limits: Limits | None = None) -> None:
        self.target = target
        self.limits = limits or Limits()
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DecodeRunner:
        self._start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        env = base_env(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENCV_LOG_LEVEL="ERROR")
        env["PYTHONPATH"] = ":".join(
            part for part in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if part
        )
        self._process = subprocess.Popen(
            [PYTHON, "-m", "tests.support.fuzzing.decode_server", self.target],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        hello = self._read()
        if not hello or not hello.get("ready"):
            raise RuntimeError(f"the decode server for {self.target} did not start")

    def _read(self) -> dict[str, Any] | None:
        assert self._process is not None and self._process.stdout is not None
        stream: IO[bytes] = self._process.stdout
        header = stream.read(4)
        if len(header) < 4:
            return None
        (length,) = struct.unpack(">I", header)
        result: dict[str, Any] = pickle.loads(stream.read(length))
        return result

    def run(self, data: bytes) -> Outcome:
        """Decode data once in a fresh limited grandchild and classify the outcome."""
        if self._process is None or self._process.poll() is not None:
            self._start()
        assert self._process is not None and self._process.stdin is not None
        payload = pickle.dumps((data, asdict(self.limits)))
        self._process.stdin.write(struct.pack(">I", len(payload)) + payload)
        self._process.stdin.flush()
        result = self._read()
        if result is None:  # the server itself died: count it as a crash and restart
            self._process = None
            return Outcome("crash", "the decode server died", 0.0, 0.0, 0, "")
        return Outcome(**result)

    def close(self) -> None:
        if self._process is not None:
            if self._process.stdin is not None:
                self._process.stdin.close()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None
