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

import numpy as np

from onemodel.boundary.contract import ModelInfo
from onemodel.boundary.server import create_server
from onemodel.errors import ConfigError, OneModelError
from onemodel.logconfig import configure_logging
from onemodel.memory import limit_malloc_arenas
from onemodel.model_server.batcher import Batcher
from onemodel.model_server.labels import load_labels
from onemodel.model_server.metrics import ServerMetrics
from onemodel.model_server.service import ModelService
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
    parser.add_argument("--model", help="MODEL_PATH: 'vgg16' or a .keras/.h5 file")
    parser.add_argument("--weights", help="MODEL_WEIGHTS (vgg16): imagenet, random or a file")
    parser.add_argument("--labels", help="MODEL_LABELS: text file, one class name per line")
    parser.add_argument("--preprocess", choices=PREPROCESS_MODES, help="MODEL_PREPROCESS")
    parser.add_argument("--precision", choices=PRECISIONS, help="MODEL_PRECISION")
    parser.add_argument("--engine", choices=ENGINES, help="MODEL_ENGINE (default auto)")
    parser.add_argument("--cache-dir", help="MODEL_CACHE_DIR: converted models ('off': none)")
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
        ("weights", "weights"),
        ("labels", "labels_path"),
        ("preprocess", "preprocess"),
        ("precision", "precision"),
        ("engine", "engine"),
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
    _install_signal_handlers(stop)
    threading.Thread(target=server.serve_forever, name="manager", daemon=True).start()
    logger.info("model server listening on %s (pid %d)", address, os.getpid())
    batcher = _load_and_attach(service, settings, metrics)
    if batcher is None:
        return EXIT_LOAD
    stop.wait()
    timeout_s = settings.model_server_drain_timeout_s
    logger.info(
        "stopping: finishing the running batch and %d queued images (at most %g s); "
        "new predictions are refused",
        batcher.queued_images,
        timeout_s,
    )
    if service.drain(timeout_s):
        logger.info("stopping: every accepted prediction was answered")
    else:
        logger.warning("stopping: predictions still unfinished after %g s were failed", timeout_s)
    server.stop_event.set()  # type: ignore[attr-defined]
    return 0


def _load_and_attach(
    service: ModelService, settings: Settings, metrics: ServerMetrics
) -> Batcher | None:
    # Imported here: only the model server process may load TensorFlow.
    from onemodel.model_server.loading import load_for_serving  # noqa: PLC0415
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
        classifier = load_for_serving(settings)
    except OneModelError as error:
        logger.error("%s", error.message)
        service.set_failed(error.message)
        return None
    labels = load_labels(settings.labels_path, classifier.num_classes)
    height, width = classifier.input_size
    warm = classifier.predict(np.zeros((1, height, width, 3), dtype=np.uint8))
    if warm.shape != (1, classifier.num_classes):
        logger.error("warm-up returned shape %s", warm.shape)
        return None
    batcher = Batcher(
        classifier.predict,
        max_batch_size=settings.max_batch_size,
        max_delay_ms=settings.max_batch_delay_ms,
        max_queue=settings.max_queue,
        on_batch=metrics.observe_batch,
    )
    batcher.start()
    service.set_ready(
        batcher,
        ModelInfo(
            state="ready",
            name=classifier.name,
            input_size=classifier.input_size,
            labels=tuple(labels),
            max_batch_size=settings.max_batch_size,
            preprocess=classifier.preprocess_mode,
            precision=classifier.precision,
            engine=classifier.engine.name,
            engine_reason=classifier.engine_reason,
            agreement=classifier.agreement,
            model_cache=classifier.cache,
            cpu_bfloat16=tuple(bfloat16_flags),
            max_batch_delay_ms=settings.max_batch_delay_ms,
            max_queue=settings.max_queue,
        ),
    )
    logger.info(
        "model %s ready on %s: input %dx%d, %d classes, preprocess %s, precision %s",
        classifier.name,
        classifier.engine.name,
        height,
        width,
        classifier.num_classes,
        classifier.preprocess_mode,
        classifier.precision,
    )
    return batcher


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


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
