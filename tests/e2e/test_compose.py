"""docker-compose.yml, really started with podman-compose on the local engine, predicts.

The project's compose file is used as is but for what a test machine needs: the image is
built once with BAKE_WEIGHTS=0 under a test tag, the model servers load the tiny model from
a bind mount (no weights download), the web port is a free one, the secret lives in a
temporary directory. podman 4.3 ignores ``depends_on: service_healthy``, so the test polls
/readyz until both replicas are ready. Skipped only when no container engine exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
import yaml

from tests.support.processes import PYTHON, ROOT, free_port, new_authkey, wait_until
from tests.support.web import record_figures

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker]

IMAGE = "onemodel-compose-test:latest"
PODMAN_SOCKET = Path("/var/tmp/container-engine/podman.sock")
MODEL_SERVERS = ("model-server-1", "model-server-2")


def _engine_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("DOCKER_HOST") and PODMAN_SOCKET.exists():
        env["DOCKER_HOST"] = f"unix://{PODMAN_SOCKET}"
    return env


def _run(command: list[str], timeout_s: float, cwd: Path | None = None) -> str:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=_engine_env(),
        cwd=cwd,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def _compose_file(directory: Path, model_dir: Path, port: int) -> Path:
    """Write the project's compose file, adapted for this machine, into directory."""
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    document.pop("x-onemodel-service", None)
    document.pop("x-model-server", None)
    for name, service in document["services"].items():
        service.pop("build", None)
        service["image"] = IMAGE
        if name in MODEL_SERVERS:
            service["environment"]["MODEL_PATH"] = "/models/tiny.keras"
            service["volumes"] = [f"{model_dir}:/models:ro"]
            service["healthcheck"]["interval"] = "5s"
            service["healthcheck"]["start_period"] = "300s"
    document["services"]["web"]["ports"] = [f"127.0.0.1:{port}:8000"]
    document.pop("volumes", None)
    (directory / "secrets").mkdir()
    key = directory / "secrets" / "authkey"
    key.write_text(new_authkey())
    key.chmod(0o644)  # read by the container's non-root user
    path = directory / "docker-compose.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def compose_up(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    podman_compose = Path(PYTHON).parent / "podman-compose"
    if shutil.which("podman") is None:
        pytest.skip("no container engine: podman is not installed (see engine-up)")
    if not podman_compose.exists():
        pytest.skip("podman-compose is not installed (pip install podman-compose)")
    try:
        _run(["podman", "info", "--format", "{{.Version.Version}}"], 30)
    except (AssertionError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"no container engine answers: {error}")
    directory = tmp_path_factory.mktemp("compose")
    model_dir = directory / "models"
    model_dir.mkdir()
    shutil.copy(tiny_model, model_dir / "tiny.keras")
    model_dir.chmod(0o755)
    (model_dir / "tiny.keras").chmod(0o644)
    port = free_port()
    compose_file = _compose_file(directory, model_dir, port)
    started = time.monotonic()
    _run(["docker", "build", "--build-arg", "BAKE_WEIGHTS=0", "-t", IMAGE, str(ROOT)], 1800)
    build_s = time.monotonic() - started
    project = f"onemodel-pool-{os.getpid()}"
    command = [str(podman_compose), "-p", project, "-f", str(compose_file)]
    try:
        _run([*command, "up", "-d"], 600, cwd=directory)
        yield f"http://127.0.0.1:{port}"
    finally:
        logs = subprocess.run(
            [*command, "logs"], capture_output=True, text=True, timeout=120, check=False
        )
        (directory / "compose.log").write_text(logs.stdout + logs.stderr)
        subprocess.run(
            [*command, "down", "-t", "30"],
            capture_output=True,
            timeout=300,
            cwd=directory,
            check=False,
        )
        print(f"compose: image build {build_s:.1f} s")


def test_compose_two_model_servers_behind_the_web_tier_predict(compose_up: str) -> None:
    started = time.monotonic()

    def both_ready() -> dict[str, Any] | None:
        response = requests.get(f"{compose_up}/readyz", timeout=10)
        if response.status_code != 200:
            return None
        body = response.json()
        ready = [replica for replica in body["replicas"] if replica["ready"]]
        return body if len(ready) == len(MODEL_SERVERS) else None

    body = wait_until(both_ready, 600, "both compose model servers ready", interval_s=2.0)
    ready_s = time.monotonic() - started
    ok, encoded = cv2.imencode(".jpg", np.full((64, 64, 3), 128, dtype=np.uint8))
    assert ok
    statuses = []
    for _ in range(20):
        response = requests.post(
            f"{compose_up}/predict",
            files={"file": ("x.jpg", encoded.tobytes(), "image/jpeg")},
            timeout=30,
        )
        statuses.append(response.status_code)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "tiny"
    served = requests.get(f"{compose_up}/readyz", timeout=10).json()["replicas"]
    figures = {
        "replicas": [replica["address"] for replica in body["replicas"]],
        "up_to_ready_s": round(ready_s, 1),
        "statuses": sorted(set(statuses)),
        "images_served": [replica["images_served"] for replica in served],
    }
    record_figures("pool", "compose", figures)
    assert sorted(address.split(":")[0] for address in figures["replicas"]) == list(MODEL_SERVERS)
