"""The model-server process: parse settings, load and warm the model, serve it, stop on signal."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from onemodel.boundary.server import create_server
from onemodel.errors import ConfigError, OneModelError
from onemodel.logconfig import configure_logging
from onemodel.memory import limit_malloc_arenas
from onemodel.model_server.metrics import ServerMetrics
from onemodel.model_server.repository import open_repository
from onemodel.model_server.service import ModelService
from onemodel.model_server.versions import VersionWatcher, load_version
from onemodel.settings import (
    ENGINES,
    PRECISIONS,
    PREPROCESS_MODES,
    Settings,
    parse_address,
    read_authkey_file,
)

logger = logging.getLogger("onemodel.model_server")

EXIT_CONFIG = 2
EXIT_LOAD = 3


def parse_settings(argv: Sequence[str] | None = None, prog: str = "model_server.py") -> Settings:
    """Build settings from the environment, overridden by command-line flags."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve one Keras image classifier to many web workers over a "
        "multiprocessing manager. Every flag has an environment variable; flags win.",
    )
    parser.add_argument(
        "--model", help="MODEL_PATH: 'vgg16', a .keras/.h5 file or a repository <name>/<version>/"
    )
    parser.add_argument("--model-version", type=int, help="MODEL_VERSION: serve only this one")
    parser.add_argument("--model-poll-s", type=float, help="MODEL_POLL_S (0: only on SIGHUP)")
    parser.add_argument("--weights", help="MODEL_WEIGHTS (vgg16): imagenet, random or a file")
    parser.add_argument("--labels", help="MODEL_LABELS: text file, one class name per line")
    parser.add_argument("--preprocess", choices=PREPROCESS_MODES, help="MODEL_PREPROCESS")
    parser.add_argument("--precision", choices=PRECISIONS, help="MODEL_PRECISION")
    parser.add_argument("--engine", choices=ENGINES, help="MODEL_ENGINE (default auto)")
    parser.add_argument(
        "--openvino-streams",
        type=_at_least_one,
        help="MODEL_OPENVINO_STREAMS: split a batch (default 2)",
    )
    parser.add_argument("--cache-dir", help="MODEL_CACHE_DIR: converted models ('off': none)")
    parser.add_argument(
        "--calibration-dir", help="MODEL_CALIBRATION_DIR: your images, to calibrate int8"
    )
    parser.add_argument(
        "--min-agreement", type=float, help="MODEL_MIN_AGREEMENT: int8's bar (default 0.99)"
    )
    parser.add_argument("--address", help="MODEL_SERVER_ADDRESS: host:port or a socket path")
    parser.add_argument("--authkey-file", help="MODEL_SERVER_AUTHKEY_FILE")
    parser.add_argument("--max-batch-size", type=int, help="MAX_BATCH_SIZE")
    parser.add_argument("--max-batch-delay-ms", type=float, help="MAX_BATCH_DELAY_MS")
    parser.add_argument("--max-queue", type=int, help="MAX_QUEUE (images)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    changes: dict[str, object] = {}
    for flag, name in (
        ("model", "model_path"),
        ("model_version", "model_version"),
        ("model_poll_s", "model_poll_s"),
        ("weights", "weights"),
        ("labels", "labels_path"),
        ("preprocess", "preprocess"),
        ("precision", "precision"),
        ("engine", "engine"),
        ("calibration_dir", "calibration_dir"),
        ("min_agreement", "min_agreement"),
        ("openvino_streams", "openvino_streams"),
        ("max_batch_size", "max_batch_size"),
        ("max_batch_delay_ms", "max_batch_delay_ms"),
        ("max_queue", "max_queue"),
    ):
        value = getattr(args, flag)
        if value is not None:
            changes[name] = value
    if args.address:
        changes["model_server_address"] = parse_address(args.address, "--address")
    if args.cache_dir:
        changes["cache_dir"] = None if args.cache_dir.lower() == "off" else args.cache_dir
    if args.authkey_file:
        changes["authkey"] = read_authkey_file(args.authkey_file)
    return settings.replace(**changes) if changes else settings


def _at_least_one(text: str) -> int:
    """Parse a flag's whole number of at least 1 (argparse then names the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit code."""
    address = settings.model_server_address
    if address is None and settings.model_server_pool:
        raise ConfigError(
            "MODEL_SERVER_ADDRESS names a pool (a list or a dns: name); a model server "
            "listens on exactly one host:port or socket path"
        )
    if address is None:
        raise OneModelError("MODEL_SERVER_ADDRESS (or --address) is required")
    authkey = settings.require_authkey()
    if address.is_tcp and not address.is_loopback:
        logger.warning(
            "listening on %s, which is not loopback: anyone who can reach it and holds the "
            "authkey can run code in this process; keep it on a private network",
            address,
        )
    metrics = ServerMetrics()
    service = ModelService(metrics=metrics)
    server = create_server(service, address, authkey)
    stop = threading.Event()
    # Set by SIGHUP: look for new model versions now. Installed before the model loads, so
    # an early SIGHUP (the Gunicorn master passes its own on) cannot kill the process.
    reload = threading.Event()
    _install_signal_handlers(stop, reload)
    threading.Thread(target=server.serve_forever, name="manager", daemon=True).start()
    logger.info("model server listening on %s (pid %d)", address, os.getpid())
    watcher = _load_and_attach(service, settings, metrics, reload)
    if watcher is None:
        return EXIT_LOAD
    reload.clear()  # the initial load just looked
    watcher.start()
    stop.wait()
    watcher.stop()  # no swap while stopping
    timeout_s = settings.model_server_drain_timeout_s
    logger.info(
        "stopping: finishing the running batch and %d queued images (at most %g s); "
        "new predictions are refused",
        service.info().queued_images,
        timeout_s,
    )
    if service.drain(timeout_s):
        logger.info("stopping: every accepted prediction was answered")
    else:
        logger.warning("stopping: predictions still unfinished after %g s were failed", timeout_s)
    server.stop_event.set()  # type: ignore[attr-defined]
    return 0


def _load_and_attach(
    service: ModelService, settings: Settings, metrics: ServerMetrics, reload: threading.Event
) -> VersionWatcher | None:
    # Imported here: only the model server process may load TensorFlow.
    from onemodel.model_server.model import cpu_bfloat16_flags  # noqa: PLC0415

    bfloat16_flags = cpu_bfloat16_flags()
    logger.info(
        "precision %s; CPU bfloat16 matrix support: %s",
        settings.precision,
        ", ".join(bfloat16_flags) if bfloat16_flags else "none",
    )
    if settings.precision == "bfloat16" and not bfloat16_flags:
        logger.warning(
            "MODEL_PRECISION=bfloat16 on a CPU without bfloat16 matrix units (no amx_bf16 or "
            "avx512_bf16): TensorFlow emulates it (usually SLOWER than float32 here) and "
            "OpenVINO computes in float32"
        )
    try:
        repository = open_repository(settings)
    except OneModelError as error:
        logger.error("%s", error.message)
        service.set_failed(error.message)
        return None
    watcher = VersionWatcher(
        service,
        repository,
        lambda version: load_version(
            settings, version, metrics.observe_batch, tuple(bfloat16_flags)
        ),
        pinned=settings.model_version,
        poll_s=settings.model_poll_s,
        # Whatever the old version still runs has at most its request timeout left.
        retire_timeout_s=settings.request_timeout_s + 5.0,
        metrics=metrics,
        wake=reload,
    )
    if not watcher.load_initial():
        return None
    return watcher


def _install_signal_handlers(stop: threading.Event, reload: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def handle_reload(signum: int, frame: FrameType | None) -> None:
        reload.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGHUP, handle_reload)


def main(argv: Sequence[str] | None = None, prog: str = "model_server.py") -> int:
    """Entry point of ``python model_server.py`` and ``onemodel model-server``."""
    configure_logging()
    limit_malloc_arenas()
    try:
        settings = parse_settings(argv, prog)
        code = run(settings)
    except OneModelError as error:
        logger.error("%s", error.message)
        return EXIT_CONFIG
    except OSError as error:
        logger.error("cannot listen: %s", error)
        return EXIT_CONFIG
    # Every reply is written. The interpreter's final garbage collection of TensorFlow's
    # objects takes seconds (8 s measured with the tiny model) and frees nothing anyone
    # needs, but a rolling update waits for it: leave now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
