"""Read the uploaded image from a Flask request: multipart field ``file`` or a raw body."""

from __future__ import annotations

import socket

from flask import Request
from werkzeug.http import parse_options_header

from onemodel.errors import InvalidRequestError, UnsupportedMediaTypeError

FIELD = "file"
_RAW_TYPES = ("application/octet-stream",)
# Part headers the fast path reads; a part with any other goes to Werkzeug's parser.
_FAST_HEADERS = frozenset(("content-disposition", "content-type"))


def read_upload(request: Request) -> bytes:
    """Return the image bytes of a request, or raise a 400/415 error saying what is wrong."""
    mimetype = request.mimetype
    fast = _fast_multipart_file(request) if mimetype == "multipart/form-data" else None
    if fast is not None:
        data: bytes = fast
    elif mimetype == "multipart/form-data":
        upload = request.files.get(FIELD)
        if upload is None and not request.files and not request.form:
            # Werkzeug drops a form it cannot parse without saying why.
            raise InvalidRequestError(
                "the multipart body has no parts or could not be parsed (check the boundary; "
                "part headers, file names included, must be UTF-8)"
            )
        if upload is None and FIELD in request.form:
            # A part without a filename is a text field to Werkzeug, decoded as text:
            # the image bytes are lost, so say exactly what to change.
            raise InvalidRequestError(
                f"the multipart part {FIELD!r} has no filename, so it was read as a text "
                f'field: send it as a file (Content-Disposition: form-data; name="{FIELD}"; '
                'filename="photo.jpg"), or the raw image with an image/* Content-Type'
            )
        if upload is None:
            others = sorted(request.files.keys())
            hint = f" (got file fields: {', '.join(others)})" if others else ""
            raise InvalidRequestError(f"the multipart form has no file field {FIELD!r}{hint}")
        data = upload.read()
    elif mimetype.startswith("image/") or mimetype in _RAW_TYPES:
        data = request.get_data(cache=False)
    elif not mimetype and not request.content_length:
        raise InvalidRequestError(
            f"no image: send multipart/form-data with the image in field {FIELD!r}, "
            "or the raw image with an image/* Content-Type"
        )
    else:
        raise UnsupportedMediaTypeError(
            f"Content-Type {mimetype!r} is not accepted: use multipart/form-data (field "
            f"{FIELD!r}) or an image/* type"
        )
    if not data:
        raise InvalidRequestError("the uploaded image is empty (0 bytes)")
    return bytes(data)


def _fast_multipart_file(request: Request) -> bytes | None:
    """Return the file of the usual upload, or None to leave the body to Werkzeug."""
    boundary = request.mimetype_params.get("boundary", "")
    try:
        encoded = boundary.encode("ascii")
    except UnicodeEncodeError:
        return None
    # The whole body has already arrived (the worker buffers it); cached, so Werkzeug's
    # parser can still read it when this path declines.
    return single_file_part(request.get_data(cache=True), encoded, FIELD)


def single_file_part(body: bytes, boundary: bytes, field: str) -> bytes | None:
    """Return the file of a multipart body made of one file part named ``field``.

    The common upload (what curl -F and requests send) costs a few ``bytes.find`` here
    instead of Werkzeug's general parser (a third of the Flask app's CPU per upload). Only
    an unambiguous body qualifies: CRLF line breaks, one opening and one closing
    delimiter and no other occurrence of the boundary, plain part headers; for such a
    body Werkzeug returns the same bytes (a property test compares them). Anything else
    returns None, and Werkzeug parses (and judges) it as before.
    """
    frame = _frame_of_one_part(body, boundary)
    if frame is None:
        return None
    headers_start, headers_end, end = frame
    headers = _plain_headers(body[headers_start:headers_end])
    if headers is None or "content-disposition" not in headers:
        return None
    disposition, options = parse_options_header(headers["content-disposition"])
    if disposition != "form-data" or options.get("name") != field or "filename" not in options:
        return None
    # Data begins after the blank line; an empty file is the blank line itself.
    start = headers_end + 4
    return body[start:end] if end >= start else b""


def _frame_of_one_part(body: bytes, boundary: bytes) -> tuple[int, int, int] | None:
    """Return where the one part's headers start and end and where its data ends."""
    if not boundary:
        return None
    delimiter = b"--" + boundary
    opening = delimiter + b"\r\n"
    # A CRLF before the first delimiter is allowed (RFC 2046; Werkzeug's test client).
    first = 2 if body.startswith(b"\r\n") else 0
    if not body.startswith(opening, first) or _occurrences(body, delimiter, 3) != 2:
        return None
    headers_start = first + len(opening)
    headers_end = body.find(b"\r\n\r\n", headers_start)
    if headers_end < 0:
        return None
    end = body.find(b"\r\n" + delimiter + b"--", headers_end + 2)
    if end < headers_end + 2:
        return None
    return headers_start, headers_end, end


def _plain_headers(block: bytes) -> dict[str, str] | None:
    """Parse part headers that every parser reads alike, else return None."""
    lone_breaks = block.count(b"\r") + block.count(b"\n") - 2 * block.count(b"\r\n")
    if lone_breaks:
        return None
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        if not line.strip(b" \t"):
            continue
        if line[:1] in (b" ", b"\t"):
            return None  # a continuation line
        try:
            text = line.decode()
        except UnicodeDecodeError:
            return None
        name, colon, value = text.partition(":")
        name = name.strip(" \t").lower()
        if not colon or name not in _FAST_HEADERS or name in headers:
            return None
        headers[name] = value.strip(" \t")
    return headers


def _occurrences(data: bytes, needle: bytes, limit: int) -> int:
    """Count occurrences of needle in data, overlapping ones too, stopping at limit."""
    count, position = 0, data.find(needle)
    while position >= 0 and count < limit:
        count += 1
        position = data.find(needle, position + 1)
    return count


def client_socket(request: Request) -> socket.socket | None:
    """Return the client's socket when the server gives it (Gunicorn does), else None."""
    candidate = request.environ.get("gunicorn.socket")
    return candidate if isinstance(candidate, socket.socket) else None
