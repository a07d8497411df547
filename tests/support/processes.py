"""Start and stop the real model server and Gunicorn as subprocesses, and wait for them."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import requests

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TEST_CACHE_DIR = Path(tempfile.gettempdir()) / f"onemodel-test-cache-{os.getuid()}"
T = TypeVar("T")


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_authkey() -> str:
    """Return a fresh 64-hex-character authkey."""
    return secrets.token_hex(32)


def wait_until(
    check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    """Poll check() until it returns a truthy value; fail with `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except AssertionError:
            raise  # a definite failure (e.g. the process died): no point waiting
        except Exception as error:  # polling: the thing may not be up yet
            last_error = error
        else:
            if value:
                return value
        time.sleep(interval_s)
    raise TimeoutError(
        f"timed out after {timeout_s:g} s waiting for {what} (last error: {last_error!r})"
    )


class Service:
    """A subprocess with its log file; stop() ends it and its process group."""

    def __init__(
        self, process: subprocess.Popen[bytes], log_path: Path, log_file: IO[bytes]
    ) -> None:
        self.process = process
        self.log_path = log_path
        self._log_file = log_file

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Return everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        """Send a signal to the process."""
        self.process.send_signal(signum)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole group; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        _kill_group(self.process.pid)
        self._log_file.close()
        return self.process.returncode


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def base_env(**extra: str) -> dict[str, str]:
    """Return an environment for our processes, without inherited onemodel settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MODEL_", "MAX_", "WEB_", "GUNICORN_", "GRPC_"))
        and key not in ("PORT", "HOST", "REQUEST_TIMEOUT_S")
    }
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    # Converted models: one cache for every test run, never the user's own.
    env["MODEL_CACHE_DIR"] = str(TEST_CACHE_DIR)
    env.update(extra)
    return env


def spawn(command: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> Service:
    """Start a command (from the repository root) in its own process group, logging to a file."""
    log = log_path.open("ab")
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Service(process, log_path, log)


def start_model_server(env: dict[str, str], log_path: Path, *args: str) -> Service:
    """Start ``python model_server.py`` in its own process group."""
    return spawn([PYTHON, str(ROOT / "model_server.py"), *args], env, log_path)


def start_gunicorn(
    env: dict[str, str], log_path: Path, port: int, *args: str, config: Path | None = None
) -> Service:
    """Start ``gunicorn -c gunicorn.conf.py wsgi:app`` on 127.0.0.1:port in its own group."""
    config_path = str(config or ROOT / "gunicorn.conf.py")
    command = [PYTHON, "-m", "gunicorn", "-c", config_path, "--bind", f"127.0.0.1:{port}"]
    return spawn([*command, *args, "wsgi:app"], env, log_path)


def wait_ready(
    base_url: str, timeout_s: float = 120.0, service: Service | None = None
) -> dict[str, Any]:
    """Poll GET /readyz until it answers 200; return its JSON."""

    def check() -> dict[str, Any] | None:
        if service is not None and service.process.poll() is not None:
            raise AssertionError(f"the process exited early:\n{service.log()[-3000:]}")
        response = requests.get(f"{base_url}/readyz", timeout=5)
        return response.json() if response.status_code == 200 else None

    return wait_until(check, timeout_s, f"{base_url}/readyz")


def process_tree(root_pid: int) -> list[int]:
    """Return root_pid and all its descendants."""
    import psutil  # noqa: PLC0415

    root = psutil.Process(root_pid)
    return [root_pid, *(child.pid for child in root.children(recursive=True))]


def maps_ml_framework(pid: int) -> bool:
    """Return whether the process has TensorFlow or OpenVINO shared libraries mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return maps_tensorflow(pid) or "libopenvino" in maps


def maps_tensorflow(pid: int) -> bool:
    """Return whether the process has a TensorFlow shared library mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtensorflow" in maps or "_pywrap_tensorflow" in maps
