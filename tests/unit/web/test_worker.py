"""The worker's error answers: Gunicorn's parse errors in our hierarchy, whole JSON responses."""

from __future__ import annotations

import json

import pytest
from gunicorn.http import errors as http_errors

from onemodel import errors
from onemodel.web.worker import error_response, gunicorn_error


@pytest.mark.parametrize(
    ("exception", "status", "code"),
    [
        (http_errors.LimitRequestLine(5000, 4094), 414, "request_line_too_long"),
        (http_errors.LimitRequestHeaders("too many"), 431, "headers_too_large"),
        (http_errors.UnsupportedTransferCoding("bogus"), 501, "unsupported_transfer_coding"),
        (http_errors.InvalidRequestLine("GET"), 400, "malformed_request"),
        (http_errors.InvalidChunkSize(b"zz"), 400, "malformed_request"),
        (http_errors.InvalidHeaderName("X Y"), 400, "malformed_request"),
    ],
)
def test_client_parse_errors_become_our_errors(
    exception: Exception, status: int, code: str
) -> None:
    error = gunicorn_error(exception)
    assert error is not None
    assert (error.status, error.code) == (status, code)


@pytest.mark.parametrize(
    "exception",
    [
        http_errors.InvalidResponseHeaderName("bad"),
        http_errors.ConfigurationProblem("bad"),
        RuntimeError("the app broke"),
    ],
)
def test_our_own_faults_are_not_blamed_on_the_client(exception: Exception) -> None:
    assert gunicorn_error(exception) is None


def test_an_error_response_is_whole_json_with_the_request_id() -> None:
    raw = error_response(errors.RequestTimeoutError(), "caller-7")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    assert "X-Request-ID: caller-7" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {
        "error": {"code": "request_timeout", "message": "the request did not arrive in time"}
    }


def test_v2_paths_get_the_protocol_shape_and_bad_ids_are_replaced() -> None:
    raw = error_response(errors.UnauthorizedError(), "bad id with spaces", "/v2/models/x/infer")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert isinstance(json.loads(body)["error"], str)
    assert b"WWW-Authenticate: Bearer" in head
    assert b"bad id" not in head
