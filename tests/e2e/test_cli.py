"""The ``onemodel`` command run for real, from an empty directory: serve, split tiers, prepare."""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.processes import (
    PYTHON,
    ROOT,
    Service,
    base_env,
    free_port,
    maps_ml_framework,
    new_authkey,
    spawn,
    wait_ready,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

READY_TIMEOUT_S = 180.0
ONEMODEL = [PYTHON, "-m", "onemodel"]


@pytest.fixture
def empty_directory(tmp_path: Path) -> Path:
    """A working directory without wsgi.py, gunicorn.conf.py or anything of the checkout."""
    directory = tmp_path / "empty"
    directory.mkdir()
    return directory


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in reversed(started):
        service.stop()


def _env(**extra: str) -> dict[str, str]:
    # The package from src/ only: the repository root (and its thin doors) is not importable.
    return base_env(PYTHONPATH=str(ROOT / "src"), **extra)


def _predict(base_url: str, jpeg: bytes) -> list[dict[str, object]]:
    response = requests.post(
        f"{base_url}/predict", files={"file": ("photo.jpg", jpeg, "image/jpeg")}, timeout=60
    )
    assert response.status_code == 200, response.text[:500]
    predictions: list[dict[str, object]] = response.json()["predictions"]
    return predictions


def test_serve_runs_gunicorn_and_a_private_model_server_and_flags_win(
    tmp_path: Path,
    empty_directory: Path,
    tiny_model: Path,
    photo_jpeg: bytes,
    services: list[Service],
) -> None:
    port, env_port = free_port(), free_port()
    # The variables say 3 workers on another port; the flags say 1 worker on `port`.
    env = _env(WEB_CONCURRENCY="3", PORT=str(env_port), WEB_THREADS="2")
    service = spawn(
        [*ONEMODEL, "serve", str(tiny_model), "--port", str(port), "--workers", "1"],
        env,
        tmp_path / "serve.log",
        cwd=empty_directory,
    )
    services.append(service)
    base_url = f"http://127.0.0.1:{port}"
    readiness = wait_ready(base_url, READY_TIMEOUT_S, service=service)
    assert readiness["model"] == "tiny"
    assert len(_predict(base_url, photo_jpeg)) == 5
    log = service.log()
    assert log.count("Booting worker") == 1, log[-3000:]
    assert f"Listening at: http://127.0.0.1:{port}" in log
    # TensorFlow only in the model server: not in the master the command became, nor its worker.
    children = psutil.Process(service.pid).children()
    workers = [c.pid for c in children if "onemodel.model_server" not in " ".join(c.cmdline())]
    assert len(workers) == 1
    assert [pid for pid in [service.pid, *workers] if maps_ml_framework(pid)] == []
    # The model server holds the model: TensorFlow, or only OpenVINO on a warm cache.
    assert any(maps_ml_framework(c.pid) for c in children if c.pid not in workers)

    assert service.stop() == 0, service.log()[-3000:]
    log = service.log()
    assert "Handling signal: term" in log
    assert "stopping the model server" in log
    assert list(empty_directory.iterdir()) == []


def test_split_tiers_with_the_model_server_and_healthcheck_commands(
    tmp_path: Path,
    empty_directory: Path,
    tiny_model: Path,
    photo_jpeg: bytes,
    services: list[Service],
) -> None:
    model_port, web_port = free_port(), free_port()
    address = f"127.0.0.1:{model_port}"
    env = _env(MODEL_SERVER_AUTHKEY=new_authkey())
    model_server = spawn(
        [*ONEMODEL, "model-server", "--model", str(tiny_model), "--address", address],
        env,
        tmp_path / "model-server.log",
        cwd=empty_directory,
    )
    services.append(model_server)

    def healthy() -> bool:
        assert model_server.process.poll() is None, model_server.log()[-3000:]
        probe = subprocess.run(
            [*ONEMODEL, "healthcheck"],
            env={**env, "MODEL_SERVER_ADDRESS": address},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert probe.returncode in (0, 1), probe.stderr  # 2 would be a configuration error
        return probe.returncode == 0

    wait_until(healthy, READY_TIMEOUT_S, "onemodel healthcheck", interval_s=0.5)
    web = spawn(
        [*ONEMODEL, "serve", "--model-server-address", address, "--port", str(web_port)],
        env,
        tmp_path / "web.log",
        cwd=empty_directory,
    )
    services.append(web)
    base_url = f"http://127.0.0.1:{web_port}"
    assert wait_ready(base_url, READY_TIMEOUT_S, service=web)["model"] == "tiny"
    assert len(_predict(base_url, photo_jpeg)) == 5
    assert f"using the model server at {address}" in web.log()


def test_prepare_loads_and_warms_the_model(empty_directory: Path, tiny_model: Path) -> None:
    result = subprocess.run(
        [*ONEMODEL, "prepare", str(tiny_model)],
        cwd=empty_directory,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prepared tiny: input 64x64, 10 classes" in result.stdout
    if importlib.util.find_spec("openvino") is not None:
        # MODEL_ENGINE=auto: the verified conversion is now in the model cache.
        assert "engine openvino" in result.stdout


def test_prepare_reports_a_model_that_does_not_load(empty_directory: Path) -> None:
    broken = empty_directory / "broken.keras"
    broken.write_bytes(b"not a keras archive")
    result = subprocess.run(
        [*ONEMODEL, "prepare", str(broken)],
        cwd=empty_directory,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert "could not be loaded as a Keras model" in result.stderr
    assert "Traceback" not in result.stderr
