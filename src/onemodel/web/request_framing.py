"""Tell, from the bytes received so far, whether an HTTP/1.1 request has fully arrived.

The web worker reads requests in its event loop and gives a thread only to complete ones;
this module is the pure part of that: bytes in, a verdict out. It judges framing only
(where the head ends, how long the body is, whether a chunked body is well formed and
within the upload limit). Everything else about the head (request line, header syntax,
header limits) is left to Gunicorn's parser, which sees the complete request afterwards.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from onemodel.errors import MalformedRequestError, OneModelError, PayloadTooLargeError

# RFC 9112 7.1.1 chunk extensions (the same grammar Gunicorn's chunked reader enforces).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED_STRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_EXTENSION = re.compile(
    rb"(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED_STRING
    + rb"))?)*"
)
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_COMPRESSIONS = ("gzip", "deflate", "compress")


class Verdict(enum.Enum):
    """What the event loop does with a connection after feeding it bytes."""

    NEED_MORE = "need_more"  # keep reading
    COMPLETE = "complete"  # the whole request is buffered: give it a thread
    HAND_OVER = "hand_over"  # the head is complete or over its limits: Gunicorn judges it
    REJECT = "reject"  # answer `error` without the application and close


@dataclass(frozen=True)
class FramingLimits:
    """The bounds the scanner enforces, in bytes."""

    max_head_bytes: int  # request line + headers, beyond Gunicorn's own limits
    max_body_bytes: int  # MAX_UPLOAD_BYTES: decoded body size
    max_chunk_line_bytes: int = 8190  # Gunicorn's limit_request_field_size
    max_trailer_bytes: int = 8190 * 32

    @property
    def max_chunked_raw_bytes(self) -> int:
        """Chunk framing may add little: tiny chunks with long extensions are refused."""
        return 2 * self.max_body_bytes + 64 * 1024


@dataclass(frozen=True)
class Head:
    """What the scanner read from a complete head."""

    length: int  # bytes of the head, its final CRLFCRLF included
    content_length: int | None
    chunked: bool
    expects_continue: bool


class RequestScanner:
    """Follow one request's bytes as they arrive; feed() returns the verdict so far."""

    def __init__(self, limits: FramingLimits) -> None:
        self._limits = limits
        self.head: Head | None = None
        self.error: OneModelError | None = None
        self.end: int | None = None  # offset just past the request, once COMPLETE
        self._searched = 0  # where the next search for the end of the head resumes
        self._position = 0  # chunked: offset of the next chunk-size line
        self._decoded = 0  # chunked: body bytes so far
        self._in_trailers = False

    def feed(self, buffer: bytes | bytearray) -> Verdict:
        """Judge everything received so far (the whole buffer, not only the new bytes)."""
        if self.head is None:
            verdict = self._scan_head(buffer)
            if verdict is not None:
                return verdict
        assert self.head is not None
        if self.head.chunked:
            return self._scan_chunks(buffer)
        end = self.head.length + (self.head.content_length or 0)
        if len(buffer) >= end:
            self.end = end
            return Verdict.COMPLETE
        return Verdict.NEED_MORE

    @property
    def waiting_for_body(self) -> bool:
        """Whether the head has arrived and the body has not (for 100-continue)."""
        return self.head is not None and self.end is None

    def _scan_head(self, buffer: bytes | bytearray) -> Verdict | None:  # noqa: PLR0911
        start = 2 if buffer[:2] == b"\r\n" else 0  # RFC 9112 2.2: one empty line may lead
        index = buffer.find(b"\r\n\r\n", max(start, self._searched - 3))
        if index < 0:
            if len(buffer) > self._limits.max_head_bytes:
                return Verdict.HAND_OVER  # Gunicorn answers 414 or 431
            if buffer.count(b"\n") != buffer.count(b"\r\n"):
                return Verdict.HAND_OVER  # bare LF: Gunicorn answers 400
            self._searched = len(buffer)
            return Verdict.NEED_MORE
        if index + 4 > self._limits.max_head_bytes:
            return Verdict.HAND_OVER
        head = self._read_head(bytes(buffer[start:index]), index + 4)
        if head is None:
            return Verdict.HAND_OVER  # framing Gunicorn refuses (or judges) from the head
        self.head = head
        if head.content_length is not None and head.content_length > self._limits.max_body_bytes:
            return self._reject(PayloadTooLargeError(_too_large(self._limits.max_body_bytes)))
        self._position = head.length
        return None

    @staticmethod
    def _read_head(block: bytes, length: int) -> Head | None:  # noqa: PLR0911
        lines = block.split(b"\r\n")
        content_lengths: list[bytes] = []
        encodings: list[str] = []
        expects_continue = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                return None
            name = name.strip().lower()
            value = value.strip(b" \t")
            if name == b"content-length":
                content_lengths.append(value)
            elif name == b"transfer-encoding":
                encodings += [
                    part.strip(" \t").lower() for part in value.decode("latin-1").split(",")
                ]
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
        if encodings:
            if content_lengths or encodings[-1] != "chunked":
                return None
            if any(encoding not in _COMPRESSIONS for encoding in encodings[:-1]):
                return None
            return Head(length, None, True, expects_continue)
        if len(content_lengths) > 1:
            return None
        content_length = None
        if content_lengths:
            text = content_lengths[0]
            if not text or not text.isdigit():  # bytes.isdigit: ASCII digits only
                return None
            content_length = int(text)
        return Head(length, content_length, False, expects_continue)

    def _scan_chunks(self, buffer: bytes | bytearray) -> Verdict:  # noqa: PLR0911
        limits = self._limits
        while True:
            if self._in_trailers:
                return self._scan_trailers(buffer)
            line_end = buffer.find(b"\r\n", self._position)
            if line_end < 0:
                if len(buffer) - self._position > limits.max_chunk_line_bytes:
                    return self._reject(MalformedRequestError("chunk size line too long"))
                return self._check_raw_size(buffer)
            if line_end - self._position > limits.max_chunk_line_bytes:
                return self._reject(MalformedRequestError("chunk size line too long"))
            size = self._chunk_size(bytes(buffer[self._position : line_end]))
            if size is None:
                return self._reject(MalformedRequestError("invalid chunk size line"))
            if size == 0:
                self._position = line_end + 2
                self._in_trailers = True
                continue
            if self._decoded + size > limits.max_body_bytes:
                return self._reject(PayloadTooLargeError(_too_large(limits.max_body_bytes)))
            data_end = line_end + 2 + size
            if len(buffer) < data_end + 2:
                return self._check_raw_size(buffer)
            if buffer[data_end : data_end + 2] != b"\r\n":
                return self._reject(MalformedRequestError("chunk data not followed by CRLF"))
            self._decoded += size
            self._position = data_end + 2

    def _scan_trailers(self, buffer: bytes | bytearray) -> Verdict:
        if buffer[self._position : self._position + 2] == b"\r\n":
            self.end = self._position + 2
            return Verdict.COMPLETE
        index = buffer.find(b"\r\n\r\n", self._position)
        if index >= 0:
            self.end = index + 4
            return Verdict.COMPLETE
        if len(buffer) - self._position > self._limits.max_trailer_bytes:
            return self._reject(MalformedRequestError("chunked trailer section too long"))
        return Verdict.NEED_MORE

    def _check_raw_size(self, buffer: bytes | bytearray) -> Verdict:
        assert self.head is not None
        if len(buffer) - self.head.length > self._limits.max_chunked_raw_bytes:
            return self._reject(PayloadTooLargeError("the chunked body has too much framing"))
        return Verdict.NEED_MORE

    @staticmethod
    def _chunk_size(line: bytes) -> int | None:
        size_text, semicolon, extension = line.partition(b";")
        if semicolon:
            if b"\r" in extension or not _CHUNK_EXTENSION.fullmatch(b";" + extension):
                return None
            size_text = size_text.rstrip(b" \t")
        if not size_text or any(byte not in _HEX_DIGITS for byte in size_text):
            return None
        return int(size_text, 16)

    def _reject(self, error: OneModelError) -> Verdict:
        self.error = error
        return Verdict.REJECT


def request_id_in(buffer: bytes | bytearray) -> str | None:
    """Return the X-Request-ID of a (possibly partial) head, from its complete lines."""
    head_end = buffer.find(b"\r\n\r\n")
    block = bytes(buffer[: head_end if head_end >= 0 else buffer.rfind(b"\r\n")])
    for line in block.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"x-request-id":
            return value.strip().decode("latin-1")
    return None


def request_path_in(buffer: bytes | bytearray) -> str:
    """Return the path of a (possibly partial) request line, or "" when it is not there."""
    line_end = buffer.find(b"\r\n")
    parts = bytes(buffer[: line_end if line_end >= 0 else 0]).split(b" ")
    return parts[1].decode("latin-1") if len(parts) == 3 else ""


def _too_large(limit: int) -> str:
    return f"the request body is larger than the {limit}-byte limit (MAX_UPLOAD_BYTES)"
