"""Read the uploaded image from a Flask request: multipart field ``file`` or a raw body."""

from __future__ import annotations

import socket

from flask import Request

from onemodel.errors import InvalidRequestError, UnsupportedMediaTypeError

FIELD = "file"
_RAW_TYPES = ("application/octet-stream",)


def read_upload(request: Request) -> bytes:
    """Return the image bytes of a request, or raise a 400/415 error saying what is wrong."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
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


def client_socket(request: Request) -> socket.socket | None:
    """Return the client's socket when the server gives it (Gunicorn does), else None."""
    candidate = request.environ.get("gunicorn.socket")
    return candidate if isinstance(candidate, socket.socket) else None
