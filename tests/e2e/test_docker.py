"""Build the container image, run it, classify a real photo, then stop it with SIGTERM.

The running container is also put through the 100-connection header slowloris of issue 10
(the plain-Gunicorn attacks are in test_slow_clients.py), so CI builds one image only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import onemodel
from tests.support.processes import ROOT, free_port, wait_until
from tests.support.slowloris import HEADER_LINES, measure, upload_probe
from tests.support.web import record_figures

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.e2e]

IMAGE = "onemodel-test"
# engine-up's podman socket: used when DOCKER_HOST is unset (see /work/shared/container).
PODMAN_SOCKET = Path("/var/tmp/container-engine/podman.sock")
# A cold build downloads TensorFlow (about a minute here); a warm one is all cache hits.
BUILD_TIMEOUT_S = 1800.0
# VGG16 with random weights loads and warms up in ~10 s here; leave room for slow CI.
READY_TIMEOUT_S = 300.0
# Gunicorn's graceful timeout inside the container; `docker stop` waits longer than this,
# so a SIGKILL (exit 137) would mean Gunicorn ignored SIGTERM.
GRACEFUL_TIMEOUT_S = 20
STOP_WAIT_S = GRACEFUL_TIMEOUT_S + 20
COMMAND_TIMEOUT_S = 60.0
# The slowloris on the container: normal uploads answered 200 within 5 s, at least this often.
SLOWLORIS_TARGET_SUCCESS = 0.90
# VGG16 on CPU answers a few uploads a second here: probe once a second, so the figure
# measures the attack, not the model's throughput (probed every 0.2 s, 8 % are answered
# in 5 s with no attack at all: docs/hostile-clients.md).
SLOWLORIS_PROBE_INTERVAL_S = 1.0


def _docker_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("DOCKER_HOST") and PODMAN_SOCKET.is_socket():
        env["DOCKER_HOST"] = f"unix://{PODMAN_SOCKET}"
    return env


def docker(
    *args: str, timeout_s: float = COMMAND_TIMEOUT_S, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a docker CLI command and return its completed process (text output)."""
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=_docker_env(),
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _no_engine(reason: str) -> None:
    """Skip without a container engine; under CI (CI set) a missing engine is a failure."""
    if os.environ.get("CI"):
        pytest.fail(
            f"CI is set but {reason}: run engine-up and export DOCKER_HOST first", pytrace=False
        )
    pytest.skip(reason)


@pytest.fixture(scope="module")
def image() -> str:
    """Build the image with BAKE_WEIGHTS=0 (no weights download) and return its tag."""
    if shutil.which("docker") is None:
        _no_engine("the docker CLI is not installed")
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout_s=30, check=False)
    except subprocess.TimeoutExpired:
        _no_engine("`docker info` did not answer within 30 s")
    else:
        if info.returncode != 0:
            _no_engine(f"`docker info` failed, no container engine: {info.stderr.strip()[-500:]}")
    started = time.monotonic()
    docker(
        "build", "--build-arg", "BAKE_WEIGHTS=0", "-t", IMAGE, str(ROOT), timeout_s=BUILD_TIMEOUT_S
    )
    print(f"docker build: {time.monotonic() - started:.1f} s")
    return IMAGE


@pytest.fixture
def container_name(image: str) -> Iterator[str]:
    """A unique container name; the container is removed afterwards (the image is kept as cache)."""
    name = f"onemodel-test-{uuid.uuid4().hex[:10]}"
    yield name
    docker("rm", "-f", name, check=False)


def _logs(name: str) -> str:
    result = docker("logs", name, check=False)
    return f"--- docker logs {name} ---\n{(result.stdout + result.stderr)[-6000:]}"


def _state(name: str) -> dict[str, object]:
    result = docker("inspect", "--format", "{{json .State}}", name)
    state: dict[str, object] = json.loads(result.stdout)
    return state


def test_image_serves_predictions_as_non_root_and_stops_on_sigterm(
    image: str, container_name: str, photo_jpeg: bytes
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    docker(
        "run",
        "-d",
        "--name",
        container_name,
        "-p",
        f"127.0.0.1:{port}:8000",
        "-e",
        "MODEL_WEIGHTS=random",
        "-e",
        f"GUNICORN_GRACEFUL_TIMEOUT={GRACEFUL_TIMEOUT_S}",
        image,
    )

    def ready() -> dict[str, object] | str | None:
        if not _state(container_name).get("Running"):
            return "exited"
        response = requests.get(f"{base_url}/readyz", timeout=5)
        return response.json() if response.status_code == 200 else None

    try:
        readiness = wait_until(ready, READY_TIMEOUT_S, f"{base_url}/readyz", interval_s=0.5)
    except TimeoutError as error:
        pytest.fail(f"{error}\n{_logs(container_name)}", pytrace=False)
    assert readiness != "exited", (
        f"the container exited before it was ready\n{_logs(container_name)}"
    )
    print(f"docker run -> /readyz 200: {time.monotonic() - started:.1f} s")
    assert isinstance(readiness, dict)
    assert readiness.get("model") == "vgg16", f"{readiness}\n{_logs(container_name)}"

    _assert_classifies_a_photo(base_url, photo_jpeg, container_name)
    _assert_normal_uploads_survive_a_slowloris(base_url, photo_jpeg, container_name)

    # Non-root: the default user of `docker exec` and the uid of PID 1 (Gunicorn's master).
    uid = docker("exec", container_name, "id", "-u").stdout.strip()
    assert uid != "0", f"docker exec runs as root\n{_logs(container_name)}"
    status = docker("exec", container_name, "cat", "/proc/1/status").stdout
    pid1_uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert "0" not in pid1_uids, f"PID 1 runs as root: Uid {pid1_uids}"

    # The image's HEALTHCHECK command passes once the service is ready.
    healthcheck = json.loads(
        docker("inspect", "--format", "{{json .Config.Healthcheck}}", container_name).stdout
    )
    assert healthcheck and healthcheck["Test"][0] == "CMD-SHELL", (
        f"no HEALTHCHECK in the image: {healthcheck}"
    )
    probe = docker("exec", container_name, "sh", "-c", healthcheck["Test"][1], check=False)
    assert probe.returncode == 0, (
        f"HEALTHCHECK failed: {probe.stderr[-2000:]}\n{_logs(container_name)}"
    )

    # Installed from the wheel (not a copy of the checkout) and run as `onemodel serve`.
    installed = docker("exec", container_name, "python", "-m", "pip", "show", "onemodel").stdout
    assert f"Version: {onemodel.__version__}" in installed, installed
    assert "Editable project location" not in installed, installed
    command = json.loads(docker("inspect", "--format", "{{json .Config.Cmd}}", image).stdout)
    assert command == ["onemodel", "serve"]
    workdir = set(docker("exec", container_name, "ls", "-A").stdout.split())
    assert not workdir & {"wsgi.py", "gunicorn.conf.py", "model_server.py", "src"}, workdir

    # docker stop sends SIGTERM (STOPSIGNAL) to Gunicorn (PID 1): workers finish, the master
    # stops the model server and exits 0. 137 would mean SIGKILL after the stop timeout.
    stopping = time.monotonic()
    docker("stop", "-t", str(STOP_WAIT_S), container_name, timeout_s=STOP_WAIT_S + 30)
    stop_s = time.monotonic() - stopping
    print(f"docker stop: {stop_s:.1f} s")
    state = _state(container_name)
    assert not state.get("Running"), f"still running after docker stop: {state}"
    assert state.get("ExitCode") == 0, (
        f"exit code {state.get('ExitCode')} on SIGTERM\n{_logs(container_name)}"
    )
    assert stop_s < GRACEFUL_TIMEOUT_S, f"docker stop took {stop_s:.1f} s\n{_logs(container_name)}"
    logs = _logs(container_name)
    assert "Handling signal: term" in logs, logs
    assert "stopping the model server" in logs, logs


def _assert_normal_uploads_survive_a_slowloris(
    base_url: str, photo_jpeg: bytes, container_name: str
) -> None:
    """Hold issue 10's 100-connection header slowloris; >= 90 % of uploads answered in 5 s."""
    # 100 connections sending a header line a second, through the published port, while
    # real photos are posted: ~20 s in all (3 s for the attack to take hold, 14 s of probes).
    outcome = measure(
        base_url,
        HEADER_LINES,
        upload_probe(base_url, photo_jpeg),
        warmup_s=3.0,
        duration_s=14.0,
        probe_interval_s=SLOWLORIS_PROBE_INTERVAL_S,
    )
    record_figures("slowloris", "container_headers", outcome.figures())
    assert outcome.attacker_connections >= HEADER_LINES.connections, outcome.figures()
    assert outcome.probes >= 10, outcome.figures()
    assert outcome.success_ratio >= SLOWLORIS_TARGET_SUCCESS, (
        f"{outcome.figures()}\n{_logs(container_name)}"
    )
    assert _state(container_name).get("Running"), _logs(container_name)


def _assert_classifies_a_photo(base_url: str, photo_jpeg: bytes, container_name: str) -> None:
    """Post a real JPEG through the whole stack: worker decode -> model server -> JSON."""
    response = requests.post(
        f"{base_url}/predict", files={"file": ("coffee.jpg", photo_jpeg, "image/jpeg")}, timeout=60
    )
    assert response.status_code == 200, (
        f"{response.status_code} {response.text[:500]}\n{_logs(container_name)}"
    )
    assert response.headers["Content-Type"].startswith("application/json")
    predictions = response.json()["predictions"]
    assert len(predictions) == 5, predictions
    assert all(isinstance(p["label"], str) and p["label"] for p in predictions), predictions
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True), scores
