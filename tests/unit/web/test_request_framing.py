"""RequestScanner: when a request has fully arrived, and which framing it refuses."""

from __future__ import annotations

import pytest

from onemodel.errors import MalformedRequestError, PayloadTooLargeError
from onemodel.web.request_framing import FramingLimits, RequestScanner, Verdict

LIMITS = FramingLimits(max_head_bytes=16_384, max_body_bytes=1_000)


def _feed_in_pieces(data: bytes, piece: int = 1) -> tuple[list[Verdict], RequestScanner]:
    scanner = RequestScanner(LIMITS)
    verdicts = []
    for end in range(piece, len(data) + piece, piece):
        verdicts.append(scanner.feed(data[:end]))
        if verdicts[-1] is not Verdict.NEED_MORE:
            break
    return verdicts, scanner


def _chunked(body: bytes) -> bytes:
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + body


def test_a_get_is_complete_exactly_when_its_head_ends() -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    verdicts, scanner = _feed_in_pieces(request)
    assert verdicts[-1] is Verdict.COMPLETE
    assert Verdict.COMPLETE not in verdicts[:-1]
    assert len(verdicts) == len(request)
    assert scanner.end == len(request)


def test_a_content_length_body_completes_at_its_last_byte_and_leaves_the_next_request() -> None:
    body = b"x" * 500
    request = b"POST /predict HTTP/1.1\r\nContent-Length: 500\r\n\r\n" + body
    verdicts, scanner = _feed_in_pieces(request, piece=7)
    assert verdicts[-1] is Verdict.COMPLETE
    assert scanner.waiting_for_body is False
    pipelined = RequestScanner(LIMITS)
    assert pipelined.feed(request + b"GET / HTTP/1.1\r\n") is Verdict.COMPLETE
    assert pipelined.end == len(request)


def test_the_head_arriving_alone_is_waiting_for_its_body_with_100_continue() -> None:
    scanner = RequestScanner(LIMITS)
    head = b"POST /p HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    assert scanner.feed(head) is Verdict.NEED_MORE
    assert scanner.waiting_for_body
    assert scanner.head is not None and scanner.head.expects_continue


def test_a_content_length_over_the_limit_is_refused_from_the_head() -> None:
    scanner = RequestScanner(LIMITS)
    verdict = scanner.feed(b"POST /p HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")
    assert verdict is Verdict.REJECT
    assert isinstance(scanner.error, PayloadTooLargeError)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /p HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        "POST /p HTTP/1.1\r\nContent-Length: \u0661\u0662\r\n\r\n".encode(),
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: bogus\r\n\r\n",
        b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n",  # bare LF: Gunicorn answers 400 at once
    ],
)
def test_framing_gunicorn_refuses_is_handed_over_at_once(head: bytes) -> None:
    assert RequestScanner(LIMITS).feed(head) is Verdict.HAND_OVER


def test_a_head_over_the_limit_is_handed_over_without_waiting_for_its_end() -> None:
    assert RequestScanner(LIMITS).feed(b"GET /" + b"a" * 20_000) is Verdict.HAND_OVER


def test_a_chunked_body_completes_after_its_last_chunk_and_trailers() -> None:
    body = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    verdicts, scanner = _feed_in_pieces(_chunked(body))
    assert verdicts[-1] is Verdict.COMPLETE
    assert scanner.end == len(_chunked(body))
    plain = RequestScanner(LIMITS)
    assert plain.feed(_chunked(b"0\r\n\r\n")) is Verdict.COMPLETE


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", "invalid chunk size"),
        (b"3\r\nabcXY0\r\n\r\n", "not followed by CRLF"),
        (b"3;" + b"a" * 60_000 + b"\r\nabc\r\n0\r\n\r\n", "too long"),
        (b"3;bad ext=\x01\r\nabc\r\n0\r\n\r\n", "invalid chunk size"),
        (b"\r\n", "invalid chunk size"),
    ],
)
def test_malformed_chunks_are_refused_as_bad_requests(body: bytes, message: str) -> None:
    _, scanner = _feed_in_pieces(_chunked(body), piece=4096)
    assert isinstance(scanner.error, MalformedRequestError)
    assert message in scanner.error.message
    assert scanner.error.status == 400


def test_a_chunked_body_over_the_upload_limit_is_refused_before_it_is_all_here() -> None:
    verdicts, scanner = _feed_in_pieces(_chunked(b"3e8\r\n" + b"x" * 1000 + b"\r\n1\r\n"), piece=64)
    assert verdicts[-1] is Verdict.REJECT
    assert isinstance(scanner.error, PayloadTooLargeError)
    at_limit = RequestScanner(LIMITS)
    body = b"3e8\r\n" + b"x" * 1000 + b"\r\n0\r\n\r\n"
    assert at_limit.feed(_chunked(body)) is Verdict.COMPLETE


def test_tiny_chunks_with_long_extensions_cannot_hide_a_huge_body() -> None:
    body = b"".join(b"1;e=" + b"a" * 8000 + b"\r\nx\r\n" for _ in range(40))
    _, scanner = _feed_in_pieces(_chunked(body), piece=65_536)
    assert isinstance(scanner.error, PayloadTooLargeError)
