"""The one settings object, parsed once from the environment (and model-server CLI flags)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from onemodel.errors import ConfigError

PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
PRECISIONS = ("float32", "bfloat16", "int8")
ENGINES = ("auto", "openvino", "tensorflow")
BALANCE_POLICIES = ("p2c", "round_robin", "fill")
MIN_TCP_AUTHKEY_BYTES = 32
MIN_DECODE_MEMORY_BYTES = 32 * 1024 * 1024
MIN_API_KEY_CHARACTERS = 16
_MIN_REQUEST_BUFFER_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Address:
    """A model-server address: a ``host:port`` TCP pair or a Unix socket path.

    With ``dns`` set, ``host`` is a name a pool resolves (again and again) to every address
    it has, e.g. a Kubernetes headless Service: ``dns:onemodel-model-server:7000``.
    """

    host: str | None = None
    port: int | None = None
    path: str | None = None
    dns: bool = False

    @property
    def is_tcp(self) -> bool:
        return self.path is None

    @property
    def is_loopback(self) -> bool:
        if not self.is_tcp:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(str(self.host)).is_loopback
        except ValueError:
            return False

    def for_multiprocessing(self) -> tuple[str, int] | str:
        """Return the address in the form ``multiprocessing.connection`` expects."""
        if self.dns:
            raise ConfigError(f"{self} is a DNS name: resolve it to addresses first")
        if self.path is not None:
            return self.path
        return (str(self.host), int(self.port or 0))

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{'dns:' if self.dns else ''}{host}:{self.port}"


def parse_address(text: str, name: str = "MODEL_SERVER_ADDRESS") -> Address:
    """Parse ``host:port`` (TCP), a filesystem path (Unix socket) or ``dns:host:port``."""
    text = text.strip()
    if not text:
        raise ConfigError(f"{name} is empty")
    if "/" in text or text.startswith("unix:"):
        path = text.removeprefix("unix:")
        return Address(path=path)
    dns = text.startswith("dns:")
    host, sep, port_text = text.removeprefix("dns:").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(
            f"{name}={text!r} is neither host:port (e.g. 127.0.0.1:7000), "
            "a Unix socket path (e.g. /run/onemodel/model.sock) "
            "nor dns:name:port (e.g. dns:onemodel-model-server:7000)"
        )
    return Address(host=host, port=int(port_text), dns=dns)


def parse_pool(text: str, name: str = "MODEL_SERVER_ADDRESS") -> tuple[Address, ...]:
    """Parse a comma-separated list of addresses (see parse_address); duplicates are errors."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ConfigError(f"{name} is empty")
    if not all(items):
        raise ConfigError(f"{name}={text!r} has an empty entry between commas")
    addresses = tuple(parse_address(item, name) for item in items)
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"{name}={text!r} names an address twice")
    return addresses


@dataclass(frozen=True)
class Settings:
    """Every setting of the service. Units are in the names."""

    # Where the model server listens (server) or is reached (web workers). None in the web
    # tier means: the Gunicorn master starts a private model server on a Unix socket.
    # A list (or a dns: name) is a pool for the web tier; a model server listens on one.
    model_server_address: Address | None = None
    model_server_pool: tuple[Address, ...] = ()
    # Pool (web tier): seconds between DNS look-ups of dns: entries, between health probes
    # of each replica, and the longest a probe waits (a partitioned replica is abandoned
    # after at most probe interval + probe timeout).
    model_server_resolve_s: float = 5.0
    model_server_probe_interval_s: float = 1.0
    model_server_probe_timeout_s: float = 2.0
    # Pool (web tier): how a request picks a replica: p2c (default), round_robin or fill.
    model_server_balance: str = "p2c"
    # Embedded mode: how many private model servers the Gunicorn master starts.
    model_server_replicas: int = 1
    # Model server: the longest a SIGTERM waits for queued and running predictions.
    model_server_drain_timeout_s: float = 25.0
    # Shared secret of the manager protocol. Never logged, never in argv.
    authkey: bytes | None = field(default=None, repr=False)
    # Model server: which model, weights, labels and preprocessing.
    model_path: str = "vgg16"
    weights: str = "imagenet"
    labels_path: str | None = None
    preprocess: str | None = None  # None: "caffe" for vgg16, "none" for model files
    precision: str = "float32"
    # auto: OpenVINO where it is installed and the converted model verifies, else TensorFlow.
    engine: str = "auto"
    # OpenVINO: the CPU streams one batch is split across (1: one request on every core,
    # OpenVINO's LATENCY mode; 2, the default: THROUGHPUT mode, the images of a batch run
    # one per request on a static one-image model, 2 at a time; docs/engines.md
    # "Throughput mode"). Typical 1-2 on a 2-core box.
    openvino_streams: int = 2
    # Converted models (OpenVINO IR) live here; None: no cache (from_env defaults to
    # $XDG_CACHE_HOME/onemodel or ~/.cache/onemodel; MODEL_CACHE_DIR=off disables it).
    cache_dir: str | None = None
    # int8 (docs/engines.md): the directory of the user's own images that calibrates the
    # quantization and, held out, measures it (required for int8; read once per cold start,
    # at most 500 files of at most max_upload_bytes each, not recursively). The int8 model
    # serves only when its top-1 agreement with float32 on the held-out images is at least
    # min_agreement (0 to 1; default 0.99).
    calibration_dir: str | None = None
    min_agreement: float = 0.99
    # The most seconds NNCF's accuracy-aware retry may take (in its own process, killed
    # after that; the model is then refused): it compiles and validates the model once per
    # group of quantized operations, which on a many-layer model can run for very long.
    quantization_timeout_s: float = 300.0
    # Model repository (MODEL_PATH a directory <name>/<version>/): a pinned version (None:
    # the highest that loads) and how often to look for new versions (0: only on SIGHUP).
    model_version: int | None = None
    model_poll_s: float = 30.0
    # Batching (model server).
    max_batch_size: int = 16
    max_batch_delay_ms: float = 10.0
    max_queue: int = 64
    # Web tier.
    request_timeout_s: float = 30.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    max_form_parts: int = 16
    default_top_k: int = 5
    model_server_start_timeout_s: float = 600.0
    # Decode sandbox (web workers; docs/security.md). Uploads are decoded and resized in
    # child processes, never in the worker. Decoder processes per worker: default 1,
    # typical 1-2; concurrent uploads of one worker wait for a free one (a hostile file
    # holds it for at most decode_timeout_s). 0 decodes in the worker itself: no
    # containment (a decoder crash kills the worker); for comparison and debugging only.
    decoder_processes: int = 1
    # Memory one decode may use: the address space a decoder may map beyond its idle size
    # (RLIMIT_AS). Default 256 MiB: JPEGs up to the pixel limit (decoded at reduced
    # scale), other formats up to about 40 MP (OpenCV holds two full-size copies). A
    # worker's decoding holds at most decoder_processes x decode_memory_bytes.
    decode_memory_bytes: int = 256 * 1024 * 1024
    # Wall-clock limit of one decode, after which the decoder is killed (its CPU-time
    # limit is this, rounded up to whole seconds). Default 3 (or half of
    # request_timeout_s when that is shorter); it must stay under request_timeout_s.
    # A 50 MP progressive JPEG takes about 1 s here.
    decode_timeout_s: float = 3.0
    # Slow clients (onemodel.web.worker reads requests before any thread sees them): a
    # request's head must arrive within request_header_timeout_s of its first byte (of
    # the connection, for a new one), its body within request_body_timeout_s of the head.
    request_header_timeout_s: float = 10.0
    request_body_timeout_s: float = 60.0
    # Bytes of arriving requests one worker buffers at most; None: the larger of 32 MiB
    # and 3 x max_upload_bytes (see request_buffer_bytes).
    max_buffered_request_bytes: int | None = None
    # Optional API keys (API_KEYS_FILE, one per line): the public API then needs
    # "Authorization: Bearer <key>". Never logged. /metrics needs one too unless
    # metrics_require_key is False.
    api_keys: tuple[bytes, ...] = field(default=(), repr=False)
    metrics_require_key: bool = True
    # gRPC (the Open Inference Protocol's GRPCInferenceService). None: off. When set, the
    # Gunicorn master runs the gRPC server process on GRPC_HOST:GRPC_PORT (0: any free port).
    grpc_port: int | None = None
    grpc_host: str = "127.0.0.1"
    grpc_threads: int = 16  # calls answered at once; each waits on one model call
    grpc_graceful_timeout_s: float = 30.0  # on SIGTERM, time given to calls in flight

    @property
    def preprocess_mode(self) -> str:
        """Return the preprocessing mode, resolving the model-dependent default."""
        if self.preprocess is not None:
            return self.preprocess
        return "caffe" if self.model_path == "vgg16" else "none"

    @property
    def request_buffer_bytes(self) -> int:
        """Return the per-worker budget for requests still arriving."""
        if self.max_buffered_request_bytes is not None:
            return self.max_buffered_request_bytes
        return max(_MIN_REQUEST_BUFFER_BYTES, 3 * self.max_upload_bytes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; a bad value raises ConfigError."""
        env = os.environ if environ is None else environ
        parser = EnvParser(env)
        address_text = env.get("MODEL_SERVER_ADDRESS", "").strip()
        request_timeout_s = parser.number("REQUEST_TIMEOUT_S", cls.request_timeout_s, minimum=0.001)
        # Unset, a decode gets 3 s, or half the request's time when that is shorter.
        default_decode_timeout_s = min(cls.decode_timeout_s, request_timeout_s / 2)
        pool = parse_pool(address_text) if address_text else ()
        single = len(pool) == 1 and not pool[0].dns
        settings = cls(
            model_server_address=pool[0] if single else None,
            model_server_pool=pool,
            model_server_resolve_s=parser.number(
                "MODEL_SERVER_RESOLVE_S", cls.model_server_resolve_s, minimum=0.1
            ),
            model_server_probe_interval_s=parser.number(
                "MODEL_SERVER_PROBE_INTERVAL_S", cls.model_server_probe_interval_s, minimum=0.05
            ),
            model_server_probe_timeout_s=parser.number(
                "MODEL_SERVER_PROBE_TIMEOUT_S", cls.model_server_probe_timeout_s, minimum=0.05
            ),
            model_server_balance=env.get("MODEL_SERVER_BALANCE", "p2c").strip().lower() or "p2c",
            model_server_replicas=parser.integer(
                "MODEL_SERVER_REPLICAS", cls.model_server_replicas, minimum=1
            ),
            model_server_drain_timeout_s=parser.number(
                "MODEL_SERVER_DRAIN_TIMEOUT_S", cls.model_server_drain_timeout_s, minimum=0.0
            ),
            authkey=read_authkey(env),
            model_path=env.get("MODEL_PATH", "vgg16").strip() or "vgg16",
            weights=env.get("MODEL_WEIGHTS", "imagenet").strip() or "imagenet",
            labels_path=env.get("MODEL_LABELS", "").strip() or None,
            preprocess=env.get("MODEL_PREPROCESS", "").strip().lower() or None,
            precision=env.get("MODEL_PRECISION", "float32").strip().lower() or "float32",
            engine=env.get("MODEL_ENGINE", "auto").strip().lower() or "auto",
            openvino_streams=parser.integer(
                "MODEL_OPENVINO_STREAMS", cls.openvino_streams, minimum=1
            ),
            cache_dir=model_cache_dir(env),
            calibration_dir=env.get("MODEL_CALIBRATION_DIR", "").strip() or None,
            min_agreement=parser.number("MODEL_MIN_AGREEMENT", cls.min_agreement, minimum=0.0),
            quantization_timeout_s=parser.number(
                "MODEL_QUANTIZATION_TIMEOUT_S", cls.quantization_timeout_s, minimum=1.0
            ),
            model_version=parser.optional_integer("MODEL_VERSION", minimum=1),
            model_poll_s=parser.number("MODEL_POLL_S", cls.model_poll_s, minimum=0.0),
            max_batch_size=parser.integer("MAX_BATCH_SIZE", cls.max_batch_size, minimum=1),
            max_batch_delay_ms=parser.number(
                "MAX_BATCH_DELAY_MS", cls.max_batch_delay_ms, minimum=0.0
            ),
            max_queue=parser.integer("MAX_QUEUE", cls.max_queue, minimum=1),
            request_timeout_s=request_timeout_s,
            max_upload_bytes=parser.integer("MAX_UPLOAD_BYTES", cls.max_upload_bytes, minimum=1),
            max_image_pixels=parser.integer("MAX_IMAGE_PIXELS", cls.max_image_pixels, minimum=1),
            max_form_parts=parser.integer("MAX_FORM_PARTS", cls.max_form_parts, minimum=1),
            default_top_k=parser.integer("DEFAULT_TOP_K", cls.default_top_k, minimum=1),
            model_server_start_timeout_s=parser.number(
                "MODEL_SERVER_START_TIMEOUT_S", cls.model_server_start_timeout_s, minimum=1.0
            ),
            decoder_processes=parser.integer("DECODER_PROCESSES", cls.decoder_processes, minimum=0),
            decode_memory_bytes=parser.integer(
                "DECODE_MEMORY_BYTES", cls.decode_memory_bytes, minimum=MIN_DECODE_MEMORY_BYTES
            ),
            decode_timeout_s=parser.number(
                "DECODE_TIMEOUT_S", default_decode_timeout_s, minimum=0.001
            ),
            request_header_timeout_s=parser.number(
                "REQUEST_HEADER_TIMEOUT_S", cls.request_header_timeout_s, minimum=0.1
            ),
            request_body_timeout_s=parser.number(
                "REQUEST_BODY_TIMEOUT_S", cls.request_body_timeout_s, minimum=0.1
            ),
            max_buffered_request_bytes=parser.optional_integer(
                "MAX_BUFFERED_REQUEST_BYTES", minimum=1
            ),
            api_keys=read_api_keys(env),
            metrics_require_key=parser.flag("METRICS_REQUIRE_KEY", cls.metrics_require_key),
            grpc_port=parser.port("GRPC_PORT"),
            # The HTTP side's HOST by default: the container sets HOST=0.0.0.0 for both.
            grpc_host=(env.get("GRPC_HOST", "").strip() or env.get("HOST", "").strip())
            or cls.grpc_host,
            grpc_threads=parser.integer("GRPC_THREADS", cls.grpc_threads, minimum=1),
            grpc_graceful_timeout_s=parser.number(
                "GRPC_GRACEFUL_TIMEOUT_S", cls.grpc_graceful_timeout_s, minimum=0.0
            ),
        )
        return settings.validated()

    def replace(self, **changes: object) -> Settings:
        """Return a copy with some settings changed, validated."""
        return dataclasses.replace(self, **changes).validated()  # type: ignore[arg-type]

    def validated(self) -> Settings:
        """Check values that depend on each other; return self or raise ConfigError."""
        if self.preprocess is not None and self.preprocess not in PREPROCESS_MODES:
            raise ConfigError(
                f"MODEL_PREPROCESS={self.preprocess!r} is not one of {', '.join(PREPROCESS_MODES)}"
            )
        if self.model_server_balance not in BALANCE_POLICIES:
            raise ConfigError(
                f"MODEL_SERVER_BALANCE={self.model_server_balance!r} is not one of "
                f"{', '.join(BALANCE_POLICIES)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"MODEL_PRECISION={self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        if self.decode_timeout_s >= self.request_timeout_s:
            raise ConfigError(
                f"DECODE_TIMEOUT_S={self.decode_timeout_s:g} must be less than "
                f"REQUEST_TIMEOUT_S={self.request_timeout_s:g}"
            )
        if self.decode_memory_bytes < MIN_DECODE_MEMORY_BYTES:
            raise ConfigError(
                f"DECODE_MEMORY_BYTES={self.decode_memory_bytes} must be at least "
                f"{MIN_DECODE_MEMORY_BYTES} (32 MiB)"
            )
        if self.decoder_processes < 0:
            raise ConfigError(f"DECODER_PROCESSES={self.decoder_processes} must be at least 0")
        if self.engine not in ENGINES:
            raise ConfigError(f"MODEL_ENGINE={self.engine!r} is not one of {', '.join(ENGINES)}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError(
                f"MODEL_MIN_AGREEMENT={self.min_agreement:g} must be between 0 and 1 "
                "(the share of held-out images whose top-1 class int8 must keep)"
            )
        if self.precision == "int8" and self.engine == "tensorflow":
            raise ConfigError(
                "MODEL_PRECISION=int8 needs the OpenVINO engine (NNCF post-training "
                "quantization): set MODEL_ENGINE=openvino or auto, not tensorflow"
            )
        if self.precision == "int8" and self.calibration_dir is None:
            raise ConfigError(
                "MODEL_PRECISION=int8 needs a calibration directory: set MODEL_CALIBRATION_DIR "
                "(or --calibration-dir) to a folder of at least 50 of your own images, "
                "preprocessed like requests; every 5th is held out to measure the int8 model"
            )
        if self.labels_path is not None and not Path(self.labels_path).is_file():
            raise ConfigError(f"MODEL_LABELS={self.labels_path!r}: no such file")
        # A chunked body may carry framing up to its own size again (see request_framing).
        smallest_buffer = 2 * self.max_upload_bytes + 1024 * 1024
        if self.request_buffer_bytes < smallest_buffer:
            raise ConfigError(
                f"MAX_BUFFERED_REQUEST_BYTES={self.request_buffer_bytes} cannot hold one "
                f"upload of MAX_UPLOAD_BYTES={self.max_upload_bytes}: set it to at least "
                f"{smallest_buffer}"
            )
        return self

    def require_authkey(self) -> bytes:
        """Return the authkey, or raise ConfigError saying how to provide one."""
        address = self.model_server_address
        if not self.authkey:
            raise ConfigError(
                "no authkey: set MODEL_SERVER_AUTHKEY or MODEL_SERVER_AUTHKEY_FILE "
                '(generate one with: python -c "import secrets; print(secrets.token_hex(32))")'
            )
        addresses = (*self.model_server_pool, *((address,) if address is not None else ()))
        tcp = any(item.is_tcp for item in addresses)
        if tcp and len(self.authkey) < MIN_TCP_AUTHKEY_BYTES:
            raise ConfigError(
                f"the authkey is {len(self.authkey)} bytes; a TCP model server needs at least "
                f"{MIN_TCP_AUTHKEY_BYTES} (generate one with: "
                'python -c "import secrets; print(secrets.token_hex(32))")'
            )
        return self.authkey


def model_cache_dir(env: Mapping[str, str]) -> str | None:
    """Return MODEL_CACHE_DIR, else $XDG_CACHE_HOME/onemodel or ~/.cache/onemodel; None if off."""
    text = env.get("MODEL_CACHE_DIR", "").strip()
    if text.lower() == "off":
        return None
    if text:
        return text
    base = env.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "onemodel")


def read_authkey(env: Mapping[str, str]) -> bytes | None:
    """Read the authkey from MODEL_SERVER_AUTHKEY or the file MODEL_SERVER_AUTHKEY_FILE."""
    inline = env.get("MODEL_SERVER_AUTHKEY", "")
    path = env.get("MODEL_SERVER_AUTHKEY_FILE", "").strip()
    if inline and path:
        raise ConfigError("set only one of MODEL_SERVER_AUTHKEY and MODEL_SERVER_AUTHKEY_FILE")
    if path:
        return read_authkey_file(path)
    return inline.strip().encode() or None


def read_authkey_file(path: str) -> bytes:
    """Read an authkey file (surrounding whitespace is ignored)."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as error:
        raise ConfigError(
            f"MODEL_SERVER_AUTHKEY_FILE={path!r} cannot be read: {error.strerror}"
        ) from None
    if not key:
        raise ConfigError(f"MODEL_SERVER_AUTHKEY_FILE={path!r} is empty")
    return key


def read_api_keys(env: Mapping[str, str]) -> tuple[bytes, ...]:
    """Read the API keys of API_KEYS_FILE: one a line; blank lines and # comments skipped.

    Error messages name the line, never the key.
    """
    path = env.get("API_KEYS_FILE", "").strip()
    if not path:
        return ()
    try:
        lines = Path(path).read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"API_KEYS_FILE={path!r} holds non-ASCII characters") from None
    except OSError as error:
        raise ConfigError(f"API_KEYS_FILE={path!r} cannot be read: {error.strerror}") from None
    keys = []
    for number, line in enumerate(lines, start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_API_KEY_CHARACTERS or not key.isprintable() or " " in key:
            raise ConfigError(
                f"API_KEYS_FILE={path!r} line {number}: a key is one word of at least "
                f"{MIN_API_KEY_CHARACTERS} printable characters (generate one with: "
                'python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        keys.append(key.encode("ascii"))
    if not keys:
        raise ConfigError(f"API_KEYS_FILE={path!r} holds no key")
    return tuple(keys)


class EnvParser:
    """Parse typed values from an environment mapping with errors naming the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def integer(self, name: str, default: int, minimum: int) -> int:
        text = self._env.get(name, "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not an integer") from None
        if value < minimum:
            raise ConfigError(f"{name}={text!r} must be at least {minimum}")
        return value

    def optional_integer(self, name: str, minimum: int) -> int | None:
        if not self._env.get(name, "").strip():
            return None
        return self.integer(name, minimum, minimum)

    def flag(self, name: str, default: bool) -> bool:
        text = self._env.get(name, "").strip().lower()
        if not text:
            return default
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={text!r} is not a boolean (true/false, 1/0, yes/no, on/off)")

    def port(self, name: str) -> int | None:
        """Parse a TCP port (0 to 65535); unset or empty means None (off)."""
        text = self._env.get(name, "").strip()
        if not text:
            return None
        if not text.isdigit() or int(text) > 65535:
            raise ConfigError(f"{name}={text!r} is not a TCP port (0 to 65535)")
        return int(text)

    def number(self, name: str, default: float, minimum: float) -> float:
        text = self._env.get(name, "").strip()
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not a number") from None
        if not value >= minimum or value == float("inf"):
            raise ConfigError(f"{name}={text!r} must be a finite number >= {minimum}")
        return value
