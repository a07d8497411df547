"""Malformed HTTP over real Gunicorn: every refusal is JSON with an X-Request-ID, never a 500
(issue 10, classes 7, 8 and 11), and chunked uploads obey MAX_UPLOAD_BYTES."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from tests.support.images import encode
from tests.support.processes import free_port, new_authkey
from tests.support.web import WebDeployment, start_fake_model_server, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_UPLOAD_BYTES = 1_000_000
_CHUNKED = (
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    b"Transfer-Encoding: chunked\r\n"
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDeployment]:
    directory = tmp_path_factory.mktemp("http_errors")
    address, key = f"127.0.0.1:{free_port()}", new_authkey()
    fake = start_fake_model_server(address, key, directory / "fake.log")
    web = start_web(
        directory,
        {
            "MODEL_SERVER_ADDRESS": address,
            "MODEL_SERVER_AUTHKEY": key,
            "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        },
        workers=1,
        threads=4,
    )
    yield web
    web.stop()
    fake.stop()


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode(np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def _exchange(deployment: WebDeployment, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; return the first answer's status, headers and body."""
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # refused mid-send: the answer is still there to read
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body[: int(headers.get("content-length", len(body)))]


def _expected_length(data: bytes) -> int:
    head, separator, _ = data.partition(b"\r\n\r\n")
    if not separator:
        return 1 << 30
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(data)


CASES = {
    "bad chunk size": (_CHUNKED + b"\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "malformed_request"),
    "chunk without CRLF": (_CHUNKED + b"\r\n3\r\nabcXY0\r\n\r\n", 400, "malformed_request"),
    "60 KB chunk extension": (
        _CHUNKED + b"\r\n3;" + b"a" * 60_000 + b"\r\nabc\r\n0\r\n\r\n",
        400,
        "malformed_request",
    ),
    "bad trailer": (_CHUNKED + b"\r\n3\r\nabc\r\n0\r\nno colon\r\n\r\n", 400, "malformed_request"),
    "bad request line": (b"GET\x01 / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed_request"),
    "URI too long": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414, "request_line_too_long"),
    "too many headers": (
        b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n",
        431,
        "headers_too_large",
    ),
    "header too large": (
        b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        431,
        "headers_too_large",
    ),
    "unknown transfer coding": (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: bogus\r\n\r\n",
        501,
        "unsupported_transfer_coding",
    ),
    "chunked over the limit": (
        _CHUNKED + b"\r\n" + (b"10000\r\n" + b"x" * 0x10000 + b"\r\n") * 20,
        413,
        "payload_too_large",
    ),
    "Content-Length over the limit": (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 60000000\r\n\r\n",
        413,
        "payload_too_large",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_requests_get_json_with_a_request_id(
    deployment: WebDeployment, name: str
) -> None:
    request, status, code = CASES[name]
    answer_status, headers, body = _exchange(deployment, request)
    assert answer_status == status, body[:300]
    assert headers["content-type"].startswith("application/json")
    assert len(headers.get("x-request-id", "")) >= 8
    assert json.loads(body)["error"]["code"] == code
    assert requests.get(deployment.url("/healthz"), timeout=5).status_code == 200


def test_a_caller_request_id_is_kept_on_a_refusal(deployment: WebDeployment) -> None:
    request = _CHUNKED + b"X-Request-ID: caller-42\r\n\r\nzz\r\n"
    _, headers, _ = _exchange(deployment, request)
    assert headers["x-request-id"] == "caller-42"


def test_a_chunked_upload_under_the_limit_is_predicted(
    deployment: WebDeployment, png: bytes
) -> None:
    pieces = (png[i : i + 1000] for i in range(0, len(png), 1000))
    response = requests.post(
        deployment.url("/predict"), data=pieces, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"]


def test_a_60_mb_chunked_upload_gets_413_not_a_truncated_200(deployment: WebDeployment) -> None:
    pieces = (b"\0" * 65536 for _ in range(60_000_000 // 65536))
    response = requests.post(
        deployment.url("/predict"), data=pieces, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_expect_100_continue_is_answered_before_the_body(
    deployment: WebDeployment, png: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(png)
        )
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(png)
        answer = b""
        while b'"predictions"' not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert b"200 OK" in answer


def test_pipelined_and_kept_alive_requests_are_all_answered(deployment: WebDeployment) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=10) as sock:
        sock.sendall(one * 3)
        answer = b""
        while answer.count(b'{"status":"ok"}') < 3:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        sock.sendall(one)  # the same connection, kept alive
        later = sock.recv(65536)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert later.startswith(b"HTTP/1.1 200 OK")


def test_a_multipart_file_part_without_a_filename_gets_a_precise_message(
    deployment: WebDeployment, png: bytes
) -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = requests.post(
        deployment.url("/predict"),
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert response.status_code == 400
    assert "has no filename" in response.json()["error"]["message"]
