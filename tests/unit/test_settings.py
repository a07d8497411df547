"""Settings: parsing from the environment, loud errors, authkey rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onemodel.errors import ConfigError
from onemodel.settings import Address, Settings, parse_address, parse_pool


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.model_path == "vgg16"
    assert settings.weights == "imagenet"
    assert settings.preprocess_mode == "caffe"
    assert settings.model_server_address is None
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.engine == "auto"


def test_model_file_defaults_to_no_preprocessing() -> None:
    assert Settings.from_env({"MODEL_PATH": "/m/model.keras"}).preprocess_mode == "none"


@pytest.mark.parametrize(
    ("text", "host", "port", "path"),
    [
        ("127.0.0.1:7000", "127.0.0.1", 7000, None),
        ("model-server:7000", "model-server", 7000, None),
        ("[::1]:7000", "::1", 7000, None),
        ("/run/onemodel/model.sock", None, None, "/run/onemodel/model.sock"),
        ("unix:relative.sock", None, None, "relative.sock"),
    ],
)
def test_parse_address(text: str, host: str | None, port: int | None, path: str | None) -> None:
    address = parse_address(text)
    assert (address.host, address.port, address.path) == (host, port, path)


@pytest.mark.parametrize("text", ["localhost", "host:", "host:notaport", "host:70000", ":7000"])
def test_bad_address_names_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="MODEL_SERVER_ADDRESS"):
        parse_address(text)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_BATCH_SIZE", "zero"),
        ("MAX_BATCH_SIZE", "0"),
        ("MAX_BATCH_DELAY_MS", "-1"),
        ("REQUEST_TIMEOUT_S", "nan"),
        ("MAX_UPLOAD_BYTES", "1.5"),
        ("MODEL_PREPROCESS", "imagenet"),
        ("MODEL_PRECISION", "float16"),
        ("MODEL_ENGINE", "onnxruntime"),
        ("MODEL_OPENVINO_STREAMS", "0"),
        ("MODEL_OPENVINO_STREAMS", "two"),
        ("MODEL_LABELS", "/no/such/labels.txt"),
        ("GRPC_PORT", "70000"),
        ("GRPC_PORT", "grpc"),
        ("GRPC_THREADS", "0"),
    ],
)
def test_bad_values_fail_loudly_naming_variable_and_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value})
    assert name in raised.value.message
    assert value in raised.value.message


def test_authkey_from_file_is_stripped(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("a" * 40 + "\n")
    settings = Settings.from_env({"MODEL_SERVER_AUTHKEY_FILE": str(key_file)})
    assert settings.authkey == b"a" * 40


def test_authkey_never_in_repr() -> None:
    settings = Settings.from_env({"MODEL_SERVER_AUTHKEY": "s3cr3t-value-that-must-not-leak"})
    assert "s3cr3t" not in repr(settings)


def test_both_authkey_sources_is_an_error(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("x" * 40)
    with pytest.raises(ConfigError, match="only one"):
        Settings.from_env(
            {"MODEL_SERVER_AUTHKEY": "y" * 40, "MODEL_SERVER_AUTHKEY_FILE": str(key_file)}
        )


def test_missing_or_empty_authkey_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        Settings.from_env({"MODEL_SERVER_AUTHKEY_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        Settings.from_env({"MODEL_SERVER_AUTHKEY_FILE": str(tmp_path / "empty")})


def test_tcp_needs_a_long_authkey() -> None:
    short = Settings.from_env(
        {"MODEL_SERVER_ADDRESS": "127.0.0.1:7000", "MODEL_SERVER_AUTHKEY": "short"}
    )
    with pytest.raises(ConfigError, match="at least 32"):
        short.require_authkey()
    missing = Settings.from_env({"MODEL_SERVER_ADDRESS": "127.0.0.1:7000"})
    with pytest.raises(ConfigError, match="no authkey"):
        missing.require_authkey()
    good = Settings.from_env(
        {"MODEL_SERVER_ADDRESS": "127.0.0.1:7000", "MODEL_SERVER_AUTHKEY": "k" * 32}
    )
    assert good.require_authkey() == b"k" * 32


def test_loopback_detection() -> None:
    assert parse_address("127.0.0.1:1").is_loopback
    assert parse_address("localhost:1").is_loopback
    assert not parse_address("0.0.0.0:1").is_loopback
    assert not parse_address("10.1.2.3:1").is_loopback


def test_decode_sandbox_settings() -> None:
    defaults = Settings.from_env({})
    assert (defaults.decoder_processes, defaults.decode_memory_bytes) == (1, 256 * 2**20)
    assert defaults.decode_timeout_s < defaults.request_timeout_s
    settings = Settings.from_env(
        {"DECODER_PROCESSES": "0", "DECODE_MEMORY_BYTES": str(2**27), "DECODE_TIMEOUT_S": "1.5"}
    )
    assert (settings.decoder_processes, settings.decode_memory_bytes) == (0, 2**27)
    assert settings.decode_timeout_s == 1.5


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"DECODE_TIMEOUT_S": "30"}, "DECODE_TIMEOUT_S"),  # not under REQUEST_TIMEOUT_S
        ({"DECODE_TIMEOUT_S": "5", "REQUEST_TIMEOUT_S": "4"}, "DECODE_TIMEOUT_S"),
        ({"DECODE_MEMORY_BYTES": "1000"}, "DECODE_MEMORY_BYTES"),
        ({"DECODER_PROCESSES": "-1"}, "DECODER_PROCESSES"),
        ({"DECODER_PROCESSES": "two"}, "DECODER_PROCESSES"),
    ],
)
def test_bad_decode_settings_fail_loudly(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(environ)


def test_slow_client_settings_and_the_buffer_budget() -> None:
    settings = Settings.from_env({"REQUEST_HEADER_TIMEOUT_S": "4", "REQUEST_BODY_TIMEOUT_S": "30"})
    assert (settings.request_header_timeout_s, settings.request_body_timeout_s) == (4.0, 30.0)
    assert settings.request_buffer_bytes == 32 * 1024 * 1024
    assert Settings.from_env({"MAX_UPLOAD_BYTES": "20000000"}).request_buffer_bytes == 60_000_000
    explicit = Settings.from_env({"MAX_BUFFERED_REQUEST_BYTES": "30000000"})
    assert explicit.request_buffer_bytes == 30_000_000
    with pytest.raises(ConfigError, match="MAX_BUFFERED_REQUEST_BYTES=1000000 cannot hold"):
        Settings.from_env({"MAX_BUFFERED_REQUEST_BYTES": "1000000"})
    with pytest.raises(ConfigError, match="REQUEST_HEADER_TIMEOUT_S='0'"):
        Settings.from_env({"REQUEST_HEADER_TIMEOUT_S": "0"})


def test_api_keys_from_a_file_never_in_repr(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# comment\n\n  first-key-0123456789  \nsecond-key-0123456789\n")
    settings = Settings.from_env({"API_KEYS_FILE": str(path)})
    assert settings.api_keys == (b"first-key-0123456789", b"second-key-0123456789")
    assert "first-key" not in repr(settings)
    assert settings.metrics_require_key
    assert not Settings.from_env({"METRICS_REQUIRE_KEY": "false"}).metrics_require_key
    with pytest.raises(ConfigError, match="METRICS_REQUIRE_KEY='maybe'"):
        Settings.from_env({"METRICS_REQUIRE_KEY": "maybe"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# only a comment\n", "holds no key"),
        ("short\n", "line 1: a key is one word"),
        ("ok-key-0123456789\ntwo words here 0123456789\n", "line 2: a key is one word"),
    ],
)
def test_bad_api_keys_files_name_the_line_not_the_key(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env({"API_KEYS_FILE": str(path)})
    assert "0123456789" not in caught.value.message
    with pytest.raises(ConfigError, match="cannot be read"):
        Settings.from_env({"API_KEYS_FILE": str(tmp_path / "missing")})


def test_engine_from_the_environment() -> None:
    assert Settings.from_env({"MODEL_ENGINE": " OpenVINO "}).engine == "openvino"
    assert Settings.from_env({"MODEL_ENGINE": "tensorflow"}).engine == "tensorflow"
    with pytest.raises(ConfigError, match=r"MODEL_ENGINE='tf' is not one of auto, openvino"):
        Settings.from_env({"MODEL_ENGINE": "tf"})


def test_openvino_streams_default_to_two_and_can_be_one() -> None:
    assert Settings.from_env({}).openvino_streams == 2
    assert Settings.from_env({"MODEL_OPENVINO_STREAMS": "1"}).openvino_streams == 1


def test_the_openvino_streams_flag_wins_and_must_be_positive(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from onemodel.model_server.main import parse_settings  # noqa: PLC0415

    monkeypatch.setenv("MODEL_OPENVINO_STREAMS", "2")
    assert parse_settings(["--openvino-streams", "1"]).openvino_streams == 1
    with pytest.raises(SystemExit):
        parse_settings(["--openvino-streams", "0"])
    assert "--openvino-streams: '0' must be at least 1" in capsys.readouterr().err


def test_model_cache_dir_defaults_per_user_and_can_be_turned_off() -> None:
    home = os.path.expanduser("~")
    assert Settings.from_env({}).cache_dir == os.path.join(home, ".cache", "onemodel")
    assert Settings.from_env({"XDG_CACHE_HOME": "/xdg"}).cache_dir == "/xdg/onemodel"
    assert Settings.from_env({"MODEL_CACHE_DIR": "/models/ir"}).cache_dir == "/models/ir"
    assert Settings.from_env({"MODEL_CACHE_DIR": "off"}).cache_dir is None
    assert Settings().cache_dir is None  # built in code (tests): no cache unless asked


def test_a_short_request_timeout_shortens_the_default_decode_timeout() -> None:
    settings = Settings.from_env({"REQUEST_TIMEOUT_S": "2"})
    assert settings.decode_timeout_s == 1.0
    assert Settings.from_env({}).decode_timeout_s == 3.0
    with pytest.raises(ConfigError, match="DECODE_TIMEOUT_S=3 must be less than"):
        Settings.from_env({"REQUEST_TIMEOUT_S": "2", "DECODE_TIMEOUT_S": "3"})


def test_grpc_is_off_unless_a_port_is_set() -> None:
    assert Settings.from_env({}).grpc_port is None
    assert Settings.from_env({"GRPC_PORT": " "}).grpc_port is None
    settings = Settings.from_env({"GRPC_PORT": "8001", "HOST": "0.0.0.0"})
    assert (settings.grpc_port, settings.grpc_host) == (8001, "0.0.0.0")
    assert Settings.from_env({"GRPC_PORT": "8001", "GRPC_HOST": "::1"}).grpc_host == "::1"
    assert Settings.from_env({"GRPC_PORT": "8001"}).grpc_host == "127.0.0.1"


def test_one_address_is_a_pool_of_one_and_the_listen_address() -> None:
    settings = Settings.from_env({"MODEL_SERVER_ADDRESS": "127.0.0.1:7000"})
    assert settings.model_server_address == Address(host="127.0.0.1", port=7000)
    assert settings.model_server_pool == (Address(host="127.0.0.1", port=7000),)


def test_a_list_and_a_dns_name_make_a_pool_without_a_listen_address() -> None:
    settings = Settings.from_env(
        {"MODEL_SERVER_ADDRESS": "10.0.0.1:7000, /run/m.sock,dns:onemodel-model-server:7000"}
    )
    assert settings.model_server_address is None
    assert settings.model_server_pool == (
        Address(host="10.0.0.1", port=7000),
        Address(path="/run/m.sock"),
        Address(host="onemodel-model-server", port=7000, dns=True),
    )
    assert [str(address) for address in settings.model_server_pool] == [
        "10.0.0.1:7000",
        "/run/m.sock",
        "dns:onemodel-model-server:7000",
    ]
    dns_only = Settings.from_env({"MODEL_SERVER_ADDRESS": "dns:model:7000"})
    assert dns_only.model_server_address is None and dns_only.model_server_pool[0].dns


@pytest.mark.parametrize(
    "text", ["a:1,,b:2", "a:1,a:1", ",", "dns:nameonly", "dns:host:0", "a:1,b"]
)
def test_bad_pools_fail_loudly(text: str) -> None:
    with pytest.raises(ConfigError, match="MODEL_SERVER_ADDRESS"):
        parse_pool(text)


def test_a_dns_name_is_not_a_socket_address() -> None:
    with pytest.raises(ConfigError, match="resolve"):
        parse_address("dns:model:7000").for_multiprocessing()


def test_pool_settings() -> None:
    settings = Settings.from_env(
        {
            "MODEL_SERVER_RESOLVE_S": "2.5",
            "MODEL_SERVER_PROBE_INTERVAL_S": "0.5",
            "MODEL_SERVER_PROBE_TIMEOUT_S": "1",
            "MODEL_SERVER_REPLICAS": "3",
            "MODEL_SERVER_DRAIN_TIMEOUT_S": "10",
        }
    )
    assert (
        settings.model_server_resolve_s,
        settings.model_server_probe_interval_s,
        settings.model_server_probe_timeout_s,
        settings.model_server_replicas,
        settings.model_server_drain_timeout_s,
    ) == (2.5, 0.5, 1.0, 3, 10.0)
    with pytest.raises(ConfigError, match="MODEL_SERVER_REPLICAS='0'"):
        Settings.from_env({"MODEL_SERVER_REPLICAS": "0"})


def test_a_tcp_pool_needs_a_long_authkey() -> None:
    settings = Settings.from_env(
        {"MODEL_SERVER_ADDRESS": "/run/a.sock,10.0.0.1:7000", "MODEL_SERVER_AUTHKEY": "short"}
    )
    with pytest.raises(ConfigError, match="at least 32"):
        settings.require_authkey()


def test_balance_setting() -> None:
    assert Settings.from_env({}).model_server_balance == "p2c"
    assert Settings.from_env({"MODEL_SERVER_BALANCE": "Fill"}).model_server_balance == "fill"
    with pytest.raises(ConfigError, match="MODEL_SERVER_BALANCE='spray'"):
        Settings.from_env({"MODEL_SERVER_BALANCE": "spray"})


def test_int8_settings_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "MODEL_PRECISION": "int8",
            "MODEL_CALIBRATION_DIR": str(tmp_path),
            "MODEL_MIN_AGREEMENT": "0.95",
        }
    )
    assert (settings.precision, settings.calibration_dir, settings.min_agreement) == (
        "int8",
        str(tmp_path),
        0.95,
    )
    assert Settings.from_env({}).min_agreement == 0.99
    assert Settings.from_env({"MODEL_MIN_AGREEMENT": "1"}).min_agreement == 1.0


@pytest.mark.parametrize("value", ["1.01", "-0.1", "abc", "nan", "inf"])
def test_min_agreement_must_be_between_0_and_1(value: str) -> None:
    with pytest.raises(ConfigError, match=f"MODEL_MIN_AGREEMENT={value}|'{value}'"):
        Settings.from_env({"MODEL_MIN_AGREEMENT": value})


def test_int8_needs_a_calibration_directory_and_not_tensorflow(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int8 needs a calibration directory"):
        Settings.from_env({"MODEL_PRECISION": "int8"})
    with pytest.raises(ConfigError, match="int8 needs the OpenVINO engine"):
        Settings.from_env(
            {
                "MODEL_PRECISION": "int8",
                "MODEL_ENGINE": "tensorflow",
                "MODEL_CALIBRATION_DIR": str(tmp_path),
            }
        )


def test_the_model_server_flags_for_int8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onemodel.model_server.main import parse_settings  # noqa: PLC0415

    for name in ("MODEL_PRECISION", "MODEL_CALIBRATION_DIR", "MODEL_MIN_AGREEMENT"):
        monkeypatch.delenv(name, raising=False)
    flags = ["--precision", "int8", "--calibration-dir", str(tmp_path), "--min-agreement", "0.9"]
    settings = parse_settings(flags)
    assert (settings.precision, settings.calibration_dir, settings.min_agreement) == (
        "int8",
        str(tmp_path),
        0.9,
    )
    with pytest.raises(ConfigError, match="MODEL_MIN_AGREEMENT=2 must be between 0 and 1"):
        parse_settings([*flags[:4], "--min-agreement", "2"])
