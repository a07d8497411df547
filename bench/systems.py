"""The served systems under test: onemodel and the tutorial and naive baselines."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from processes import Launcher, Started, cmdline_text, free_port, get_json, wait_ready

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ROOT / "bench" / "baselines"
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
NAIVE_WORKERS = 4
# Variables of the parent shell that would change what a server does; never passed on.
_DROPPED = (
    "MODEL_SERVER_ADDRESS",
    "MODEL_SERVER_AUTHKEY",
    "MODEL_SERVER_AUTHKEY_FILE",
    "HOST",
    "PORT",
    "WEB_CONCURRENCY",
    "WEB_THREADS",
    "MODEL_PATH",
    "MODEL_WEIGHTS",
    "MODEL_PRECISION",
    "MODEL_ENGINE",
    "MODEL_CACHE_DIR",
    "MODEL_CALIBRATION_DIR",
    "MODEL_MIN_AGREEMENT",
    "MAX_BATCH_SIZE",
    "MAX_BATCH_DELAY_MS",
    "MAX_QUEUE",
    "REQUEST_TIMEOUT_S",
    "MODEL_PREPROCESS",
    "MODEL_LABELS",
    "ACCESS_LOG",
)


@dataclass(frozen=True)
class ServerSpec:
    """What to serve: the model, its precision, and onemodel's web tier shape."""

    model_path: str  # "vgg16" or a .keras file
    precision: str = "float32"
    workers: int = 4
    threads: int = 4
    extra_env: tuple[tuple[str, str], ...] = ()
    # onemodel's MODEL_ENGINE; the baselines and the ceiling are TensorFlow whatever it is.
    engine: str = "tensorflow"
    # MODEL_CACHE_DIR (the bench's own, not the user's) and MODEL_CALIBRATION_DIR (int8).
    cache_dir: str = ""
    calibration_dir: str = ""

    def model_env(self) -> dict[str, str]:
        """Return the environment every system reads its model from."""
        env = base_env()
        env.update(
            MODEL_PATH=self.model_path,
            MODEL_WEIGHTS="random",
            MODEL_PRECISION=self.precision,
            MODEL_ENGINE=self.engine,
        )
        if self.cache_dir:
            env["MODEL_CACHE_DIR"] = self.cache_dir
        if self.calibration_dir and self.precision == "int8":
            env["MODEL_CALIBRATION_DIR"] = self.calibration_dir
            # The bench's models have random weights: near-uniform scores whose top-1 flips
            # on any change, so agreement says nothing (the gate is tested on a trained
            # model in tests/integration/model_server/test_int8.py). The bench measures
            # int8's speed: post-training quantization, accepted whatever it agrees.
            env["MODEL_MIN_AGREEMENT"] = "0"
        env.update(dict(self.extra_env))
        return env


@dataclass
class Server:
    """A running served system: its process tree, base URL and how to name its processes."""

    system: str
    started: Started
    base_url: str
    roles: Callable[[psutil.Process, int], str]
    ready_info: dict[str, object]

    @property
    def predict_url(self) -> str:
        return f"{self.base_url}/predict"


def base_env() -> dict[str, str]:
    """Return this environment without onemodel's variables, plus quiet TensorFlow logs."""
    env = {key: value for key, value in os.environ.items() if key not in _DROPPED}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_server(system: str, spec: ServerSpec, launcher: Launcher, timeout_s: float) -> Server:
    """Start one system on a free port and wait until it can answer predictions."""
    starters = {"onemodel": _start_onemodel, "tutorial": _start_tutorial, "naive": _start_naive}
    return starters[system](spec, launcher, timeout_s)


def _start_onemodel(spec: ServerSpec, launcher: Launcher, timeout_s: float) -> Server:
    port = free_port()
    env = spec.model_env()
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY=str(spec.workers),
        WEB_THREADS=str(spec.threads),
        ACCESS_LOG="",  # no per-request log line, as in the baselines
    )
    argv = [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"]
    shape = f"w{spec.workers}t{spec.threads}"
    name = f"onemodel-{_model_label(spec)}-{spec.engine}-{spec.precision}-{shape}"
    started = launcher.start(name, argv, env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"

    def workers_up() -> bool:
        return _count_role(started, onemodel_role, "worker") >= spec.workers

    info = wait_ready(started, f"{base}/readyz", timeout_s, extra=workers_up)
    return Server("onemodel", started, base, onemodel_role, info)


def _start_tutorial(spec: ServerSpec, launcher: Launcher, timeout_s: float) -> Server:
    port = free_port()
    argv = [PYTHON, str(BASELINES / "tutorial_app.py"), "--port", str(port)]
    name = f"tutorial-{_model_label(spec)}-{spec.precision}"
    started = launcher.start(name, argv, with_path(spec.model_env()), cwd=BASELINES)
    base = f"http://127.0.0.1:{port}"
    info = wait_ready(started, f"{base}/readyz", timeout_s)
    return Server("tutorial", started, base, tutorial_role, info)


def _start_naive(spec: ServerSpec, launcher: Launcher, timeout_s: float) -> Server:
    port = free_port()
    ready_dir = Path(tempfile.mkdtemp(prefix="onemodel-bench-naive-", dir=launcher.log_dir))
    env = with_path(spec.model_env())
    env["NAIVE_READY_DIR"] = str(ready_dir)
    argv = [
        GUNICORN,
        "--workers",
        str(NAIVE_WORKERS),
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "900",
        "--chdir",
        str(BASELINES),
        "naive_app:app",
    ]
    name = f"naive-{_model_label(spec)}-{spec.precision}"
    started = launcher.start(name, argv, env, cwd=BASELINES)
    base = f"http://127.0.0.1:{port}"

    def all_workers_loaded() -> bool:
        return len(list(ready_dir.iterdir())) >= NAIVE_WORKERS

    info = wait_ready(started, f"{base}/readyz", timeout_s, extra=all_workers_loaded)
    return Server("naive", started, base, gunicorn_role, info)


def with_path(env: dict[str, str]) -> dict[str, str]:
    """Put bench/baselines first on PYTHONPATH, keeping the caller's (onemodel's src)."""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BASELINES), env.get("PYTHONPATH", "")]))
    return env


def _model_label(spec: ServerSpec) -> str:
    return "vgg16" if spec.model_path == "vgg16" else Path(spec.model_path).stem


def _count_role(started: Started, roles: Callable[[psutil.Process, int], str], role: str) -> int:
    return sum(1 for process in started.tree() if roles(process, started.pid) == role)


# The decode sandbox's processes (children of the Gunicorn workers).
DECODER_COMMAND = "onemodel.web.decoder_process"
# onemodel's web tier: every role of its tree but the model server.
WEB_TIER_ROLES = ("master", "worker", "decoder")


def gunicorn_role(process: psutil.Process, root_pid: int) -> str:
    """Name a process of a plain Gunicorn tree: master, worker or decoder (a worker's)."""
    if process.pid == root_pid:
        return "master"
    return "decoder" if DECODER_COMMAND in cmdline_text(process) else "worker"


def onemodel_role(process: psutil.Process, root_pid: int) -> str:
    """Name a process of onemodel's tree: master, worker, decoder or model_server."""
    if process.pid == root_pid:
        return "master"
    command = cmdline_text(process)
    if DECODER_COMMAND in command:
        return "decoder"
    return "model_server" if "onemodel.model_server" in command else "worker"


def tutorial_role(process: psutil.Process, root_pid: int) -> str:
    """Name a process of the tutorial's tree: the Flask web process or the manager."""
    return "web" if process.pid == root_pid else "manager"


def readyz(server: Server) -> dict[str, object]:
    """Return the server's /readyz body ({} when it does not answer 200)."""
    status, body = get_json(f"{server.base_url}/readyz")
    return body if status == 200 else {}


def ready_fields(info: dict[str, object]) -> dict[str, object]:
    """Return the JSON-able part of a /readyz body (the conversion agreement is a dict)."""
    kept = (str, int, float, bool, list, dict)
    return {key: value for key, value in info.items() if value is None or isinstance(value, kept)}
