"""The container probe's exit codes: 2 for bad configuration, 1 for not ready."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import ROOT, base_env, free_port, new_authkey


def _probe(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onemodel.healthcheck"],
        cwd=ROOT,
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "MODEL_SERVER_ADDRESS is not set"),
        ({"MODEL_SERVER_ADDRESS": "127.0.0.1:7000"}, "no authkey"),
        ({"MODEL_SERVER_ADDRESS": "nonsense"}, "neither host:port"),
        ({"MODEL_SERVER_ADDRESS": "127.0.0.1:7000", "MODEL_SERVER_AUTHKEY": "short"}, "32"),
    ],
)
def test_bad_configuration_exits_2(env: dict[str, str], fragment: str) -> None:
    result = _probe(**env)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr


def test_an_unreachable_server_exits_1_without_printing_the_key() -> None:
    key = new_authkey()
    result = _probe(MODEL_SERVER_ADDRESS=f"127.0.0.1:{free_port()}", MODEL_SERVER_AUTHKEY=key)
    assert result.returncode == 1, result.stderr
    assert "not ready" in result.stderr
    assert key not in result.stderr + result.stdout
