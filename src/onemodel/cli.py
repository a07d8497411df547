"""The ``onemodel`` command: serve, model-server, healthcheck and prepare.

Every flag has an environment variable (named in ``--help``); a flag sets its variable
before anything reads the environment, so flags win and every process started from here
(Gunicorn's workers, the private model server) sees the same values.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import onemodel
from onemodel import settings as settings_module
from onemodel.errors import ConfigError, OneModelError
from onemodel.settings import PRECISIONS, PREPROCESS_MODES, Settings

EXIT_CONFIG = 2
EXIT_LOAD = 3
CONFIG_MODULE = "onemodel.master.config"
MODEL_EXTRA_HINT = "pip install 'onemodel[model]'"
# What the model extra installs and the model server imports (looked up, never imported here).
_MODEL_MODULES = ("keras", "tensorflow")


@dataclass(frozen=True)
class _Flag:
    """A command-line flag and the environment variable it sets."""

    flag: str
    variable: str
    help: str
    type: Callable[[str], object] = str
    choices: Sequence[str] | None = None


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


def _number(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value >= minimum or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= {minimum:g}")
        return value

    return parse


def _port(text: str) -> int:
    value = _integer(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return value


# What the model server loads: shared by `serve` (its private model server) and `prepare`.
_MODEL_FLAGS: tuple[_Flag, ...] = (
    _Flag("--weights", "MODEL_WEIGHTS", "vgg16's weights: imagenet, random or a file"),
    _Flag("--labels", "MODEL_LABELS", "text file, one class name per line"),
    _Flag("--preprocess", "MODEL_PREPROCESS", "input preprocessing", choices=PREPROCESS_MODES),
    _Flag("--precision", "MODEL_PRECISION", "compute precision", choices=PRECISIONS),
)
# The engine flag exists once the settings know engines (MODEL_ENGINE).
_ENGINES: Sequence[str] | None = getattr(settings_module, "ENGINES", None)
if _ENGINES:
    _MODEL_FLAGS = (
        *_MODEL_FLAGS,
        _Flag("--engine", "MODEL_ENGINE", "inference engine", choices=tuple(_ENGINES)),
        _Flag("--cache-dir", "MODEL_CACHE_DIR", "converted models ('off': no cache)"),
    )
_MODEL_FLAGS = (
    *_MODEL_FLAGS,
    _Flag("--calibration-dir", "MODEL_CALIBRATION_DIR", "your images, to calibrate int8"),
    _Flag(
        "--min-agreement",
        "MODEL_MIN_AGREEMENT",
        "int8 serves only at this top-1 agreement (0-1, default 0.99)",
        _number(0.0),
    ),
)

_SERVE_FLAGS = (
    _Flag("--host", "HOST", "address to listen on (default 127.0.0.1)"),
    _Flag("--port", "PORT", "TCP port to listen on (default 8000)", type=_port),
    _Flag("--grpc-port", "GRPC_PORT", "also serve the inference protocol over gRPC", type=_port),
    _Flag("--workers", "WEB_CONCURRENCY", "Gunicorn worker processes (default 2)", _integer(1)),
    _Flag("--threads", "WEB_THREADS", "threads per worker (default 8)", _integer(1)),
    *_MODEL_FLAGS,
    _Flag("--max-batch-size", "MAX_BATCH_SIZE", "images per model call", _integer(1)),
    _Flag("--max-batch-delay-ms", "MAX_BATCH_DELAY_MS", "wait to fill a batch", _number(0.0)),
    _Flag("--max-queue", "MAX_QUEUE", "images waiting before 503", _integer(1)),
    _Flag("--request-timeout-s", "REQUEST_TIMEOUT_S", "per-request deadline", _number(0.001)),
    _Flag(
        "--model-server-address",
        "MODEL_SERVER_ADDRESS",
        "a remote model server (host:port or socket path) instead of a private one",
    ),
    _Flag("--authkey-file", "MODEL_SERVER_AUTHKEY_FILE", "the remote model server's authkey"),
    _Flag("--log-level", "LOG_LEVEL", "debug, info, warning or error (default info)"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``onemodel`` command; return its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["model-server"]:
        # The model server parses its own flags (the same as `python model_server.py`).
        return _model_server(arguments[1:])
    parser = _parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except ConfigError as error:
        print(f"onemodel {args.command}: error: {error.message}", file=sys.stderr)
        return EXIT_CONFIG
    except OneModelError as error:
        print(f"onemodel {args.command}: {error.message}", file=sys.stderr)
        return EXIT_LOAD


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onemodel",
        description="One Keras image classifier process behind many Gunicorn workers.",
        epilog="Run `onemodel COMMAND --help` for the flags of a command.",
    )
    parser.add_argument("--version", action="version", version=f"onemodel {onemodel.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve the model over HTTP (Gunicorn + a private model server)",
        description="Serve MODEL over HTTP: Gunicorn with onemodel's settings and hooks, "
        "exactly `gunicorn -c gunicorn.conf.py wsgi:app`. Its master starts a private model "
        "server unless --model-server-address names one. Every flag sets the environment "
        "variable in brackets; the variables keep working, flags win.",
    )
    _add_model_argument(serve)
    _add_flags(serve, _SERVE_FLAGS)
    serve.set_defaults(run=_serve, command_parser=serve)

    commands.add_parser(
        "model-server",
        help="run the model server alone (split tiers; see `onemodel model-server --help`)",
        add_help=False,
    )

    healthcheck = commands.add_parser(
        "healthcheck",
        help="exit 0 when the model server named by the environment is ready",
        description="Probe the model server at MODEL_SERVER_ADDRESS with the authkey of "
        "MODEL_SERVER_AUTHKEY(_FILE): exit 0 if ready, 1 if not ready or unreachable, "
        "2 on bad configuration. For container health checks of a model-server tier.",
    )
    healthcheck.set_defaults(run=_healthcheck, command_parser=healthcheck)

    prepare = commands.add_parser(
        "prepare",
        help="load and warm the model once, filling its caches (image builds)",
        description="Load MODEL as the model server would and run it once, so whatever "
        "loading fetches or converts (the VGG16 ImageNet weights into the Keras cache, "
        "converted engine files) is in place before the service starts, e.g. in an image "
        "build for read-only hosts. Needs the model extra.",
    )
    _add_model_argument(prepare)
    _add_flags(prepare, _MODEL_FLAGS)
    prepare.set_defaults(run=_prepare, command_parser=prepare)
    return parser


def _add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="[MODEL_PATH] 'vgg16' (default), a .keras/.h5 file or a model repository directory",
    )


def _add_flags(parser: argparse.ArgumentParser, flags: Sequence[_Flag]) -> None:
    for flag in flags:
        parser.add_argument(
            flag.flag,
            dest=_dest(flag),
            type=flag.type,
            choices=flag.choices,
            metavar=None if flag.choices else flag.variable,
            help=f"[{flag.variable}] {flag.help}",
        )


def _dest(flag: _Flag) -> str:
    return flag.flag.removeprefix("--").replace("-", "_")


def flag_environ(args: argparse.Namespace, flags: Sequence[_Flag]) -> dict[str, str]:
    """Return the environment variables the given flags (and MODEL) set."""
    environ = {
        flag.variable: str(getattr(args, _dest(flag)))
        for flag in flags
        if getattr(args, _dest(flag), None) is not None
    }
    model = getattr(args, "model", None)
    if model is not None:
        environ["MODEL_PATH"] = model_path(model)
    return environ


def model_path(model: str) -> str:
    """Return MODEL as MODEL_PATH: 'vgg16' as is, a path absolute and checked to exist."""
    if model == "vgg16":
        return model
    path = os.path.abspath(os.path.expanduser(model))
    if not os.path.exists(path):
        raise ConfigError(f"MODEL {model!r}: no such file or directory")
    return path


def _serve(args: argparse.Namespace) -> int:
    os.environ.update(flag_environ(args, _SERVE_FLAGS))
    settings = Settings.from_env()
    # The Gunicorn variables are checked (ConfigError) before Gunicorn is imported: it
    # reads WEB_CONCURRENCY at import and would fail with a traceback.
    config = _gunicorn_config()
    from onemodel.master.application import OneModelApplication  # noqa: PLC0415

    if settings.model_server_address is None:
        _require_model_extra(
            "onemodel serve starts a private model server, which needs TensorFlow and Keras: "
            f"{MODEL_EXTRA_HINT}, or name a remote model server with --model-server-address"
        )
    overrides: dict[str, object] = {}
    if args.host is not None or args.port is not None:
        overrides["bind"] = config.bind  # flags win over GUNICORN_CMD_ARGS too
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.threads is not None:
        overrides["threads"] = args.threads
    OneModelApplication(config, overrides).run()  # returns only by SystemExit from the arbiter
    return 0


def _gunicorn_config() -> ModuleType:
    """Execute the Gunicorn settings module afresh (it reads the environment) and return it."""
    if CONFIG_MODULE in sys.modules:
        return importlib.reload(sys.modules[CONFIG_MODULE])
    return importlib.import_module(CONFIG_MODULE)


def _model_server(argv: list[str]) -> int:
    if not {"-h", "--help"} & set(argv):
        try:
            _require_model_extra(
                f"onemodel model-server needs TensorFlow and Keras: {MODEL_EXTRA_HINT}"
            )
        except ConfigError as error:
            print(f"onemodel model-server: error: {error.message}", file=sys.stderr)
            return EXIT_CONFIG
    from onemodel.model_server.main import main as model_server_main  # noqa: PLC0415

    return model_server_main(argv, prog="onemodel model-server")


def _healthcheck(args: argparse.Namespace) -> int:
    from onemodel.healthcheck import main as healthcheck_main  # noqa: PLC0415

    return healthcheck_main()


def _prepare(args: argparse.Namespace) -> int:
    os.environ.update(flag_environ(args, _MODEL_FLAGS))
    settings = Settings.from_env()
    _require_model_extra(f"onemodel prepare loads the model with Keras: {MODEL_EXTRA_HINT}")
    from onemodel.logconfig import configure_logging  # noqa: PLC0415
    from onemodel.model_server.prepare import prepare  # noqa: PLC0415 (TensorFlow)

    configure_logging()
    print(prepare(settings))
    return 0


def _require_model_extra(message: str) -> None:
    """Raise ConfigError unless TensorFlow and Keras are installed (looked up, not imported)."""
    if any(importlib.util.find_spec(name) is None for name in _MODEL_MODULES):
        raise ConfigError(message)


if __name__ == "__main__":
    sys.exit(main())
