"""The wheel a user installs: built from a clean clone, installed into fresh virtualenvs
outside the checkout, serving from an empty directory with nothing of the repository."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import onemodel
from tests.support.processes import (
    PYTHON,
    ROOT,
    Service,
    base_env,
    free_port,
    new_authkey,
    spawn,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.package]

BUILD_TIMEOUT_S = 600.0
# Installing TensorFlow into an empty virtualenv: ~1.5-2.5 min on this 2-core machine.
INSTALL_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 180.0
MODEL_MODULES = ("tensorflow", "keras")


def _run(
    command: list[str], timeout_s: float, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; fail with its output if it exits non-zero."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs
    )
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def _clean_env(**extra: str) -> dict[str, str]:
    """An environment in which nothing of the checkout is importable."""
    env = base_env(**extra)
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel with `python -m build` from a clone of the committed tree."""
    work = tmp_path_factory.mktemp("wheel")
    clone = work / "clone"
    _run(["git", "clone", "--quiet", str(ROOT), str(clone)], 120.0)
    started = time.monotonic()
    _run(
        [PYTHON, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(clone)],
        BUILD_TIMEOUT_S,
        env=_clean_env(),
    )
    print(f"python -m build --wheel: {time.monotonic() - started:.1f} s")
    wheels = list((work / "dist").glob("onemodel-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _pip(venv: Path, *args: str, timeout_s: float = INSTALL_TIMEOUT_S) -> None:
    """Run the checkout's pip on the virtualenv's interpreter (the venv needs no pip of its own)."""
    _run(
        [PYTHON, "-m", "pip", "--python", str(venv / "bin" / "python"), *args],
        timeout_s,
        env=_clean_env(),
    )


def _install(venv: Path, requirement: str) -> float:
    """pip install a requirement into the virtualenv, pinned by constraints.txt; return seconds."""
    started = time.monotonic()
    # --no-compile: byte-compiling TensorFlow's thousands of modules doubles the install time.
    _pip(
        venv, "install", "--quiet", "--no-compile", "-c", str(ROOT / "constraints.txt"), requirement
    )
    return time.monotonic() - started


@pytest.fixture(scope="module")
def web_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtualenv outside the checkout with the wheel, no extras: the web side."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    assert ROOT not in venv.parents
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], 120.0, env=_clean_env())
    print(f"pip install onemodel (no extras): {_install(venv, str(wheel)):.1f} s")
    return venv


@pytest.fixture(scope="module")
def model_venv(web_venv: Path, wheel: Path) -> Path:
    """The same virtualenv after `pip install "onemodel[model]"`: TensorFlow and Keras added.

    Reused rather than made anew: the web-only test has looked at it first (tests run in
    file order), and a second virtualenv would only repeat the web side's install.
    """
    print(f'pip install "onemodel[model]": {_install(web_venv, f"{wheel}[model]"):.1f} s')
    return web_venv


def _finds(venv: Path, modules: tuple[str, ...]) -> list[str]:
    """Return which of the modules the virtualenv's Python can import."""
    code = (
        "import importlib.util, sys; "
        "print(' '.join(n for n in sys.argv[1:] if importlib.util.find_spec(n)))"
    )
    result = _run([str(venv / "bin" / "python"), "-c", code, *modules], 60.0, env=_clean_env())
    return result.stdout.split()


def _empty_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "empty"
    directory.mkdir()
    return directory


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in reversed(started):
        service.stop()


def test_the_wheel_holds_the_package_its_data_and_the_command(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (
        "onemodel/cli.py",
        "onemodel/master/config.py",
        "onemodel/model_server/imagenet_classes.txt",
        "onemodel/web/static/index.html",
        "onemodel/web/static/app.js",
        "onemodel/web/static/style.css",
        "onemodel/grpc_server/open_inference_grpc_pb2.py",
        "onemodel/grpc_server/open_inference_grpc.proto",
    ):
        assert path in names, f"{path} missing from {wheel.name}"
    assert not [name for name in names if name.startswith(("tests/", "bench/"))]
    info = f"onemodel-{onemodel.__version__}.dist-info"
    assert wheel.name.startswith(f"onemodel-{onemodel.__version__}-py3-none-any")
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "onemodel = onemodel.cli:main" in entry_points
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [line for line in requires if "extra ==" not in line]
    assert not [line for line in base if "tensorflow" in line or "keras" in line], base
    assert any("tensorflow" in line and 'extra == "model"' in line for line in requires)


def test_web_only_install_has_no_tensorflow_and_serves_a_remote_model_server(
    web_venv: Path,
    tmp_path: Path,
    tiny_model: Path,
    photo_jpeg: bytes,
    services: list[Service],
) -> None:
    empty_directory = _empty_directory(tmp_path)
    venv = web_venv
    assert _finds(venv, MODEL_MODULES) == []
    assert _finds(venv, ("flask", "gunicorn", "cv2", "prometheus_client")) == [
        "flask",
        "gunicorn",
        "cv2",
        "prometheus_client",
    ]
    show = subprocess.run(
        [
            PYTHON,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "show",
            "tensorflow",
            "tensorflow-cpu",
            "keras",
        ],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    assert show.returncode != 0, show.stdout

    onemodel_command = str(venv / "bin" / "onemodel")
    # Without the model extra a private model server is impossible: said, not a traceback.
    refused = subprocess.run(
        [onemodel_command, "serve"],
        cwd=empty_directory,
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "pip install 'onemodel[model]'" in refused.stderr
    assert "Traceback" not in refused.stderr

    # A model tier from the checkout, the web tier from the web-only install.
    authkey = new_authkey()
    model_port, web_port = free_port(), free_port()
    model_env = base_env(MODEL_SERVER_AUTHKEY=authkey, PYTHONPATH=str(ROOT / "src"))
    services.append(
        spawn(
            [
                PYTHON,
                "-m",
                "onemodel",
                "model-server",
                "--model",
                str(tiny_model),
                "--address",
                f"127.0.0.1:{model_port}",
            ],
            model_env,
            tmp_path / "model-server.log",
        )
    )
    web_env = _clean_env(MODEL_SERVER_AUTHKEY=authkey)
    web = spawn(
        [
            onemodel_command,
            "serve",
            "--model-server-address",
            f"127.0.0.1:{model_port}",
            "--port",
            str(web_port),
            "--workers",
            "1",
            "--threads",
            "2",
        ],
        web_env,
        tmp_path / "web.log",
        cwd=empty_directory,
    )
    services.append(web)
    base_url = f"http://127.0.0.1:{web_port}"
    readiness = wait_ready(base_url, READY_TIMEOUT_S, service=web)
    assert readiness["model"] == "tiny"
    _assert_predicts(base_url, photo_jpeg)
    page = requests.get(f"{base_url}/", timeout=10)  # package data: the web page
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert web.stop() == 0, web.log()[-3000:]
    assert list(empty_directory.iterdir()) == []


def test_model_install_serves_a_model_file_from_an_empty_directory(
    model_venv: Path,
    tmp_path: Path,
    tiny_model: Path,
    photo_jpeg: bytes,
    services: list[Service],
) -> None:
    empty_directory = _empty_directory(tmp_path)
    venv = model_venv
    assert _finds(venv, MODEL_MODULES) == list(MODEL_MODULES)
    (empty_directory / "model.keras").write_bytes(tiny_model.read_bytes())

    port = free_port()
    started = time.monotonic()
    service = spawn(
        [
            str(venv / "bin" / "onemodel"),
            "serve",
            "model.keras",
            "--port",
            str(port),
            "--workers",
            "1",
            "--threads",
            "2",
        ],
        _clean_env(),
        tmp_path / "serve.log",
        cwd=empty_directory,
    )
    services.append(service)
    base_url = f"http://127.0.0.1:{port}"
    readiness = wait_ready(base_url, READY_TIMEOUT_S, service=service)
    print(f"onemodel serve model.keras -> /readyz 200: {time.monotonic() - started:.1f} s")
    assert readiness["model"] == "model"
    _assert_predicts(base_url, photo_jpeg)
    assert service.stop() == 0, service.log()[-3000:]
    log = service.log()
    assert "stopping the model server" in log, log[-3000:]
    assert str(ROOT) not in log  # nothing ran from the checkout
    assert sorted(p.name for p in empty_directory.iterdir()) == ["model.keras"]


def _assert_predicts(base_url: str, jpeg: bytes) -> None:
    response = requests.post(
        f"{base_url}/predict", files={"file": ("photo.jpg", jpeg, "image/jpeg")}, timeout=60
    )
    assert response.status_code == 200, response.text[:500]
    predictions = response.json()["predictions"]
    assert len(predictions) == 5
    assert all(p["label"].startswith("class_") for p in predictions), predictions
