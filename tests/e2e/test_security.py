"""Security over real processes: authkey rules, private sockets, refused clients, no secret
anywhere (logs, responses, argv, environments), and upload limits over real HTTP.

One stack serves the module: an embedded deployment, and two external TCP model servers
(tiny model) reached by Gunicorns holding the key from a file, from the environment, and
a wrong one. Every log runs at debug level, where leaks usually hide.
"""

from __future__ import annotations

import base64
import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

from onemodel.boundary.client import ModelClient
from onemodel.errors import ModelUnavailableError
from onemodel.settings import parse_address
from tests.support.images import MULTIPART, multipart, png_header_only
from tests.support.processes import (
    Service,
    base_env,
    free_port,
    new_authkey,
    process_tree,
    start_model_server,
    wait_until,
)
from tests.support.web import WebDeployment, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEBUG = {"LOG_LEVEL": "debug"}


@dataclass
class Stack:
    """Everything the module's tests look at, and every answer they received."""

    file_key: str
    env_key: str
    wrong_key: str
    key_file: Path
    file_server: Service  # key from --authkey-file
    env_server: Service  # key from MODEL_SERVER_AUTHKEY
    embedded: WebDeployment
    with_file_key: WebDeployment
    with_env_key: WebDeployment
    with_wrong_key: WebDeployment
    seen: list[str] = field(default_factory=list)  # response heads and bodies, error messages

    def get(self, deployment: WebDeployment, path: str, **kwargs: object) -> requests.Response:
        return self._record(requests.get(deployment.url(path), timeout=30, **kwargs))  # type: ignore[arg-type]

    def post(self, deployment: WebDeployment, path: str, **kwargs: object) -> requests.Response:
        return self._record(requests.post(deployment.url(path), timeout=30, **kwargs))  # type: ignore[arg-type]

    def _record(self, response: requests.Response) -> requests.Response:
        self.seen.append(f"{response.status_code} {dict(response.headers)}\n{response.text}")
        return response


def _wait_model_server(address: str, key: str, server: Service) -> None:
    client = ModelClient(parse_address(address), key.encode())

    def ready() -> bool:
        assert server.process.poll() is None, server.log()[-3000:]
        return client.info().ready

    wait_until(ready, 180, f"the model server at {address}")


@pytest.fixture(scope="module")
def stack(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("security")
    file_key, env_key, wrong_key = new_authkey(), new_authkey(), new_authkey()
    key_file = directory / "authkey"
    key_file.write_text(file_key + "\n")
    key_file.chmod(0o600)
    file_address, env_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    file_server = start_model_server(
        base_env(MODEL_PATH=str(tiny_model), **DEBUG),
        directory / "file-server.log",
        "--address",
        file_address,
        "--authkey-file",
        str(key_file),
    )
    env_server = start_model_server(
        base_env(
            MODEL_PATH=str(tiny_model),
            MODEL_SERVER_ADDRESS=env_address,
            MODEL_SERVER_AUTHKEY=env_key,
            **DEBUG,
        ),
        directory / "env-server.log",
    )
    started: list[WebDeployment] = []
    try:
        # Loads its own model while the two external servers load theirs.
        started.append(
            start_web(tmp_path_factory.mktemp("embedded"), {"MODEL_PATH": str(tiny_model), **DEBUG})
        )
        _wait_model_server(file_address, file_key, file_server)
        _wait_model_server(env_address, env_key, env_server)
        for env, ready in (
            (
                {"MODEL_SERVER_ADDRESS": file_address, "MODEL_SERVER_AUTHKEY_FILE": str(key_file)},
                True,
            ),
            ({"MODEL_SERVER_ADDRESS": env_address, "MODEL_SERVER_AUTHKEY": env_key}, True),
            ({"MODEL_SERVER_ADDRESS": file_address, "MODEL_SERVER_AUTHKEY": wrong_key}, False),
        ):
            started.append(start_web(tmp_path_factory.mktemp("web"), {**env, **DEBUG}, ready=ready))
        yield Stack(file_key, env_key, wrong_key, key_file, file_server, env_server, *started)
    finally:
        for deployment in started:
            deployment.stop()
        file_server.stop()
        env_server.stop()


@pytest.mark.parametrize("via", ["MODEL_SERVER_AUTHKEY", "MODEL_SERVER_AUTHKEY_FILE"])
def test_tcp_model_server_refuses_a_short_authkey(tmp_path: Path, via: str) -> None:
    short = "s3cret-but-short-31-bytes-long!"
    assert len(short) == 31
    env = base_env(MODEL_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
    if via == "MODEL_SERVER_AUTHKEY":
        env[via] = short
    else:
        (tmp_path / "key").write_text(short)
        env[via] = str(tmp_path / "key")
    server = start_model_server(env, tmp_path / "server.log")
    assert server.process.wait(60) == 2
    server.stop()
    log = server.log()
    assert "the authkey is 31 bytes; a TCP model server needs at least 32" in log
    # The documented way to make a good one (README: "Running the model server yourself").
    assert 'python -c "import secrets; print(secrets.token_hex(32))"' in log
    assert "Traceback" not in log
    assert short not in log


def test_binding_every_interface_is_warned_about(tmp_path: Path) -> None:
    # A model file that does not exist: the server warns as it binds, then stops.
    env = base_env(
        MODEL_SERVER_ADDRESS=f"0.0.0.0:{free_port()}",
        MODEL_SERVER_AUTHKEY=new_authkey(),
        MODEL_PATH=str(tmp_path / "missing.keras"),
    )
    server = start_model_server(env, tmp_path / "server.log")
    try:
        wait_until(
            lambda: "not loopback" in server.log() or server.process.poll() is not None,
            120,
            "the model server to bind or exit",
        )
    finally:
        server.stop()
    log = server.log()
    assert "WARNING" in log and "listening on 0.0.0.0" in log and "which is not loopback" in log
    assert env["MODEL_SERVER_AUTHKEY"] not in log


def test_embedded_socket_and_key_are_private(stack: Stack) -> None:
    server = stack.embedded.model_server()
    assert server is not None
    # Where the model server really listens, as the kernel reports it (the listening socket
    # and the connections it accepted share the path).
    paths = {conn.laddr for conn in server.net_connections(kind="unix") if conn.laddr}
    assert len(paths) == 1, paths
    socket_path = Path(paths.pop())
    directory = socket_path.parent
    socket_stat, directory_stat = socket_path.stat(), directory.stat()
    assert stat.S_ISSOCK(socket_stat.st_mode) and stat.S_IMODE(socket_stat.st_mode) == 0o600
    assert stat.S_ISDIR(directory_stat.st_mode) and stat.S_IMODE(directory_stat.st_mode) == 0o700
    assert socket_stat.st_uid == directory_stat.st_uid == os.getuid()
    key_file = directory / "authkey"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 32
    # The model server (like the workers, which inherit the master's variables after fork)
    # is told where the socket and the key file are, never the key itself.
    environ = server.environ()
    assert environ["MODEL_SERVER_ADDRESS"] == str(socket_path)
    assert environ["MODEL_SERVER_AUTHKEY_FILE"] == str(key_file)
    assert "MODEL_SERVER_AUTHKEY" not in environ


def test_a_client_with_the_wrong_authkey_gets_a_clear_error(stack: Stack) -> None:
    client = ModelClient(parse_address(_address_of(stack.file_server)), stack.wrong_key.encode())
    with pytest.raises(ModelUnavailableError) as raised:
        client.info()
    message = raised.value.message
    stack.seen.append(message)
    assert message == "the model server refused our authkey (MODEL_SERVER_AUTHKEY differs)"
    wait_until(
        lambda: "refused a client: failed authkey handshake" in stack.file_server.log(),
        10,
        "the refusal in the model server's log",
    )
    # The server keeps serving everyone else.
    ok = stack.post(
        stack.with_file_key, "/predict", files={"file": ("a.png", png_header_only(1, 1))}
    )
    assert ok.status_code == 400  # reached the worker, which judged the upload
    assert stack.get(stack.with_file_key, "/readyz").status_code == 200


def _address_of(server: Service) -> str:
    for connection in psutil.Process(server.pid).net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN:
            return f"{connection.laddr.ip}:{connection.laddr.port}"
    raise AssertionError("the model server does not listen on TCP")


def test_web_tier_with_the_wrong_authkey_is_not_ready_and_says_why(
    stack: Stack, photo_jpeg: bytes
) -> None:
    refusals_before = stack.file_server.log().count("refused a client")
    response = stack.get(stack.with_wrong_key, "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert {key: body[key] for key in ("ready", "reason")} == {
        "ready": False,
        "reason": "the model server refused our authkey (MODEL_SERVER_AUTHKEY differs)",
    }
    assert [replica["ready"] for replica in body["replicas"]] == [False]
    predict = stack.post(stack.with_wrong_key, "/predict", files={"file": ("a.jpg", photo_jpeg)})
    assert predict.status_code == 503 and predict.json()["error"]["code"] == "model_unavailable"
    assert predict.headers["Retry-After"] == "1"
    wait_until(
        lambda: stack.file_server.log().count("refused a client") > refusals_before,
        10,
        "the new refusals in the model server's log",
    )
    # Meanwhile the right key still gets answers from the same server.
    good = stack.post(stack.with_file_key, "/predict", files={"file": ("a.jpg", photo_jpeg)})
    assert good.status_code == 200


def _raw_http(
    port: int, request: bytes, timeout_s: float = 15.0
) -> tuple[bytes, float, float | None]:
    """Send bytes; return the answer, the seconds until its head came and until the server
    hung up (None: it had not after timeout_s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        started = time.monotonic()
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head_s = time.monotonic() - started
        closed_s = None
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed_s = time.monotonic() - started
        except TimeoutError:
            pass
    return received, head_s, closed_s


@pytest.mark.parametrize("content_type", ["image/jpeg", MULTIPART])
def test_a_huge_content_length_is_refused_before_the_body_is_read(
    stack: Stack, content_type: str
) -> None:
    # Declares 1 GB and sends 16 bytes: a server that read the body before answering would
    # wait for the rest until the client gave up. It answers 413 at once; Gunicorn then
    # drops the connection when its keep-alive time (GUNICORN_KEEPALIVE, 5 s) runs out.
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {10**9}\r\n\r\n"
    ).encode()
    response, head_s, closed_s = _raw_http(
        stack.with_file_key.port, head + b"\xff\xd8\xff" + b"\x00" * 13
    )
    stack.seen.append(response.decode(errors="replace"))
    assert response.startswith(b"HTTP/1.1 413"), response[:300]
    assert b'"code":"payload_too_large"' in response
    assert head_s < 2.0
    assert closed_s is not None and closed_s < 5 + 2.0, closed_s
    print(
        f"huge Content-Length: 413 after {head_s:.3f} s, connection closed after {closed_s:.1f} s"
    )


def test_a_pixel_bomb_is_refused(stack: Stack) -> None:
    bomb = png_header_only(30000, 30000)
    raw = stack.post(stack.embedded, "/predict", data=bomb, headers={"Content-Type": "image/png"})
    form = stack.post(stack.embedded, "/predict", files={"file": ("bomb.png", bomb, "image/png")})
    for response in (raw, form):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "too_many_pixels"
        assert "30000x30000" in response.json()["error"]["message"]


def test_too_many_parts_is_refused(stack: Stack, photo_jpeg: bytes) -> None:
    parts = [(f"field{index}".encode(), None, b"x") for index in range(100)]
    body = multipart([*parts, (b"file", b"photo.jpg", photo_jpeg)])
    response = stack.post(
        stack.embedded, "/predict", data=body, headers={"Content-Type": MULTIPART}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def _exercise(stack: Stack, deployment: WebDeployment, photo_jpeg: bytes) -> None:
    """Good and bad requests on every route."""
    for path in (
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v2",
        "/v2/health/ready",
        "/nope",
        "/predict",
    ):
        stack.get(deployment, path)
    for files in (
        {"file": ("a.jpg", photo_jpeg)},
        {"file": ("a.jpg", b"text, not an image")},
        {"file": ("a.jpg", photo_jpeg[:500])},
        {"other": ("a.jpg", photo_jpeg)},
    ):
        stack.post(deployment, "/predict?top_k=3", files=files)
        stack.post(deployment, "/hello", files=files)
    stack.post(deployment, "/predict", data=b"{}", headers={"Content-Type": "application/json"})
    stack.post(
        deployment, "/predict", data=b"x" * (11 * 2**20), headers={"Content-Type": "image/jpeg"}
    )
    stack.post(
        deployment, "/predict?top_k=zero", data=photo_jpeg, headers={"Content-Type": "image/jpeg"}
    )


def _forms(key: str) -> dict[str, str]:
    raw = key.encode()
    return {
        "text": key,
        "bytes repr": repr(raw),
        "hex": raw.hex(),
        "base64": base64.b64encode(raw).decode(),
        "first half": key[: len(key) // 2],
        "second half": key[len(key) // 2 :],
    }


def _proc_text(pid: int, name: str) -> str:
    try:
        return (
            Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except (FileNotFoundError, ProcessLookupError):
        return ""


def test_no_secret_in_any_log_answer_argv_or_environment(stack: Stack, photo_jpeg: bytes) -> None:
    deployments = [stack.embedded, stack.with_file_key, stack.with_env_key, stack.with_wrong_key]
    for deployment in deployments:
        _exercise(stack, deployment, photo_jpeg)
    assert sum(text.startswith("200") for text in stack.seen) >= 10  # good requests were served
    embedded_server = stack.embedded.model_server()
    assert embedded_server is not None
    embedded_key = (
        (Path(embedded_server.environ()["MODEL_SERVER_AUTHKEY_FILE"])).read_text().strip()
    )
    keys = {
        "file key": stack.file_key,
        "environment key": stack.env_key,
        "wrong key": stack.wrong_key,
        "embedded key": embedded_key,
    }

    places: dict[str, str] = {}
    for index, deployment in enumerate(deployments):
        places[f"gunicorn log {index}"] = deployment.gunicorn.log()
    places["file-key model server log"] = stack.file_server.log()
    places["environment-key model server log"] = stack.env_server.log()
    places["answers and error messages"] = "\n".join(stack.seen)
    trees = {pid for deployment in deployments for pid in process_tree(deployment.gunicorn.pid)}
    trees |= {stack.file_server.pid, stack.env_server.pid}
    for pid in trees:
        places[f"argv of {pid}"] = _proc_text(pid, "cmdline")
    # Processes that got the key from a file (or the embedded set-up) must not hold it in
    # their environment; those configured with MODEL_SERVER_AUTHKEY hold it by design.
    from_files = set(process_tree(stack.embedded.gunicorn.pid)) | set(
        process_tree(stack.with_file_key.gunicorn.pid)
    )
    for pid in from_files | {stack.file_server.pid}:
        places[f"environment of {pid}"] = _proc_text(pid, "environ")
    assert len([name for name in places if name.startswith("argv")]) >= 4 * 3 + 2

    leaks = [
        f"{key_name} ({form}) in {place}"
        for key_name, key in keys.items()
        for form, text in _forms(key).items()
        for place, content in places.items()
        if text in content
    ]
    assert not leaks, leaks
    # The search can find things: where a key is on purpose, it is found.
    assert stack.file_key in stack.key_file.read_text()
    assert stack.env_key in _proc_text(stack.with_env_key.gunicorn.pid, "environ")
    assert "refused a client" in stack.file_server.log()
