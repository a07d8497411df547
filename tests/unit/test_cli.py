"""The ``onemodel`` command: flags become environment variables, bad values exit 2 clearly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import onemodel
from onemodel import cli


@pytest.fixture(autouse=True)
def restored_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commands write os.environ (that is how flags reach every process): undo it."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("MODEL_", "MAX_", "WEB_", "GUNICORN_", "GRPC_")) or name in (
            "HOST",
            "PORT",
        ):
            monkeypatch.delenv(name)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _serve_environ(*argv: str) -> dict[str, str]:
    args = cli._parser().parse_args(["serve", *argv])
    return cli.flag_environ(args, cli._SERVE_FLAGS)


def test_serve_flags_set_the_variables_the_processes_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    environ = _serve_environ(
        "model.keras",
        "--host",
        "0.0.0.0",
        "--port",
        "9001",
        "--grpc-port",
        "9002",
        "--workers",
        "3",
        "--threads",
        "4",
        "--precision",
        "bfloat16",
        "--max-batch-size",
        "8",
        "--max-batch-delay-ms",
        "2.5",
    )
    assert environ == {
        "MODEL_PATH": str(model),  # absolute: the model server may run elsewhere
        "HOST": "0.0.0.0",
        "PORT": "9001",
        "GRPC_PORT": "9002",
        "WEB_CONCURRENCY": "3",
        "WEB_THREADS": "4",
        "MODEL_PRECISION": "bfloat16",
        "MAX_BATCH_SIZE": "8",
        "MAX_BATCH_DELAY_MS": "2.5",
    }


def test_no_flags_leave_the_environment_alone() -> None:
    assert _serve_environ() == {}


def test_vgg16_is_a_model_name_and_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert cli.model_path("vgg16") == "vgg16"
    assert cli.model_path(str(tmp_path)) == str(tmp_path)  # a model repository directory
    with pytest.raises(cli.ConfigError, match="no such file or directory"):
        cli.model_path(str(tmp_path / "missing.keras"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--workers", "abc"], "argument --workers: 'abc' is not an integer"),
        (["serve", "--port", "70000"], "argument --port: '70000' is not a TCP port"),
        (["serve", "--threads", "0"], "argument --threads: '0' must be at least 1"),
        (["serve", "--precision", "float8"], "argument --precision: invalid choice"),
        (["prepare", "--max-batch-size", "4"], "unrecognized arguments"),
    ],
)
def test_a_bad_flag_exits_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MODEL_PRECISION", "float8", "MODEL_PRECISION='float8' is not one of"),
        ("MAX_BATCH_SIZE", "many", "MAX_BATCH_SIZE='many' is not an integer"),
        # Gunicorn itself reads WEB_CONCURRENCY when imported: checked before that.
        ("WEB_CONCURRENCY", "two", "WEB_CONCURRENCY='two' is not an integer"),
        ("PORT", "0", "PORT='0' must be at least 1"),
        ("MODEL_SERVER_ADDRESS", "nowhere", "MODEL_SERVER_ADDRESS='nowhere' is neither"),
    ],
)
def test_a_bad_variable_exits_2_with_the_settings_message(
    variable: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ[variable] = value
    assert cli.main(["serve"]) == 2
    error = capsys.readouterr().err
    assert f"onemodel serve: error: {message}" in error
    assert "Traceback" not in error


def test_serve_without_the_model_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_MODEL_MODULES", ("onemodel_no_such_module",))
    assert cli.main(["serve", "--port", "8123"]) == 2
    error = capsys.readouterr().err
    assert "pip install 'onemodel[model]'" in error
    assert "--model-server-address" in error
    assert cli.main(["model-server"]) == 2
    assert "pip install 'onemodel[model]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("serve", ["MODEL_PATH", "WEB_CONCURRENCY", "WEB_THREADS", "--port", "MODEL_PRECISION"]),
        ("prepare", ["MODEL_PATH", "MODEL_WEIGHTS", "Keras cache"]),
        ("healthcheck", ["MODEL_SERVER_ADDRESS", "exit 0 if ready"]),
        ("model-server", ["onemodel model-server", "MAX_BATCH_SIZE", "--address"]),
    ],
)
def test_every_command_has_help(
    command: str, expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for text in expected:
        assert text in out


def test_version_and_the_command_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"onemodel {onemodel.__version__}"
    assert cli.main([]) == 2
    listing = capsys.readouterr().err
    for command in ("serve", "model-server", "healthcheck", "prepare"):
        assert command in listing


def test_healthcheck_without_an_address_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["healthcheck"]) == 2
    assert "MODEL_SERVER_ADDRESS is not set" in capsys.readouterr().err


def test_prepare_int8_without_a_calibration_directory_says_one_is_needed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["prepare", "--precision", "int8"]) == 2
    error = capsys.readouterr().err
    assert "onemodel prepare: error: MODEL_PRECISION=int8 needs a calibration directory" in error
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prepare", "--min-agreement", "-1"])
    assert exit_info.value.code == 2
    assert "argument --min-agreement: '-1' must be a finite number >= 0" in capsys.readouterr().err
