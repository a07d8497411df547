"""Optional API keys over real Gunicorn: Bearer keys from API_KEYS_FILE, 401 JSON, probes
open, /metrics per METRICS_REQUIRE_KEY, tritonclient sending the header, keys never logged."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from tests.support.images import encode
from tests.support.processes import free_port, new_authkey
from tests.support.web import WebDeployment, start_fake_model_server, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEYS = [secrets.token_urlsafe(24), secrets.token_urlsafe(24)]
MODEL = "fake"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDeployment]:
    directory = tmp_path_factory.mktemp("api_keys")
    keys_file = directory / "api_keys"
    keys_file.write_text(f"# operators' keys\n{KEYS[0]}\n\n{KEYS[1]}\n")
    address, key = f"127.0.0.1:{free_port()}", new_authkey()
    fake = start_fake_model_server(address, key, directory / "fake.log")
    web = start_web(
        directory,
        {
            "MODEL_SERVER_ADDRESS": address,
            "MODEL_SERVER_AUTHKEY": key,
            "API_KEYS_FILE": str(keys_file),
            "LOG_LEVEL": "debug",
        },
        workers=2,
        threads=4,
    )
    yield web
    web.stop()
    fake.stop()


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode(np.random.default_rng(9).integers(0, 255, (32, 32, 3), dtype=np.uint8))


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("headers", [{}, _bearer("wrong"), {"Authorization": f"Basic {KEYS[0]}"}])
def test_the_api_needs_a_key(
    deployment: WebDeployment, png: bytes, headers: dict[str, str]
) -> None:
    for response in (
        requests.post(
            deployment.url("/predict"), files={"file": ("a.png", png)}, headers=headers, timeout=10
        ),
        requests.get(deployment.url("/metrics"), headers=headers, timeout=10),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.headers["X-Request-ID"]
        assert response.json()["error"]["code"] == "unauthorized"
    v2 = requests.get(deployment.url("/v2/health/ready"), headers=headers, timeout=10)
    assert v2.status_code == 401
    assert isinstance(v2.json()["error"], str)  # the protocol's own error shape


@pytest.mark.parametrize("key", KEYS)
def test_every_configured_key_works(deployment: WebDeployment, png: bytes, key: str) -> None:
    response = requests.post(
        deployment.url("/predict"), files={"file": ("a.png", png)}, headers=_bearer(key), timeout=10
    )
    assert response.status_code == 200, response.text
    assert requests.get(deployment.url("/metrics"), headers=_bearer(key), timeout=10).ok


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v2/health/live"])
def test_probes_stay_open(deployment: WebDeployment, path: str) -> None:
    assert requests.get(deployment.url(path), timeout=10).status_code == 200


def _triton(deployment: WebDeployment) -> Any:
    import tritonclient.http as httpclient  # noqa: PLC0415

    return httpclient.InferenceServerClient(f"127.0.0.1:{deployment.port}", network_timeout=30.0)


def test_tritonclient_passes_the_key(deployment: WebDeployment) -> None:
    import tritonclient.http as httpclient  # noqa: PLC0415
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    client = _triton(deployment)
    try:
        assert client.is_server_live()  # open, no header
        assert client.is_server_ready(headers=_bearer(KEYS[1]))
        assert not client.is_server_ready()  # 401 without the key
        height, width = client.get_model_metadata(MODEL, headers=_bearer(KEYS[1]))["inputs"][0][
            "shape"
        ][1:3]
        batch = np.zeros((1, height, width, 3), np.uint8)
        tensor = httpclient.InferInput("image", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch, binary_data=True)
        result = client.infer(MODEL, [tensor], headers=_bearer(KEYS[1]))
        assert result.as_numpy("probabilities").shape[0] == 1
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, [tensor], headers=_bearer("wrong"))
        assert refused.value.status() == "401"
    finally:
        client.close()


def test_no_key_appears_in_the_logs(deployment: WebDeployment, png: bytes) -> None:
    requests.post(
        deployment.url("/predict"),
        files={"file": ("a.png", png)},
        headers=_bearer(KEYS[0]),
        timeout=10,
    )
    requests.get(deployment.url("/metrics"), headers=_bearer("not-a-key-" + KEYS[1]), timeout=10)
    log = deployment.gunicorn.log()
    assert "/predict" in log  # the access log is there, at debug level
    for key in KEYS:
        assert key not in log
