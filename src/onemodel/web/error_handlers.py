"""The one JSON error path of the web tier: every error answered, counted and logged alike.

Each API keeps its own body shape (onemodel's ``{"error": {"code", "message"}}``, the
Open Inference Protocol's ``{"error": "<message>"}``); the shape is a parameter, the path
is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException

from onemodel.errors import MalformedRequestError, OneModelError, PayloadTooLargeError
from onemodel.web.runtime import runtime

logger = logging.getLogger(__name__)

# Builds the JSON body of an error answer from its machine code and message.
ErrorShape = Callable[[str, str], dict[str, Any]]


def onemodel_shape(code: str, message: str) -> dict[str, Any]:
    """Return onemodel's error body."""
    return {"error": {"code": code, "message": message}}


def protocol_shape(code: str, message: str) -> dict[str, Any]:
    """Return the Open Inference Protocol's error body."""
    return {"error": message}


def register_error_handlers(target: Flask | Blueprint, shape: ErrorShape) -> None:
    """Answer every error raised under ``target`` as JSON in ``shape``."""

    def answer_error(error: OneModelError) -> ResponseReturnValue:
        return _answer(error, shape)

    def answer_http_exception(error: HTTPException) -> ResponseReturnValue:
        return _answer(_from_http_exception(error), shape, _allow_header(error))

    def answer_unexpected(error: Exception) -> ResponseReturnValue:
        if isinstance(error, ParseException):
            # Gunicorn's parser raises from wsgi.input while the app reads the body (a bad
            # chunk or trailer): the client's fault, and the connection closes after it.
            message = f"the request body is malformed: {str(error)[:200]}"
            return _answer(MalformedRequestError(message), shape)
        logger.exception("unexpected error while handling a request")
        return _answer(OneModelError("internal server error"), shape)

    target.register_error_handler(OneModelError, answer_error)
    target.register_error_handler(HTTPException, answer_http_exception)
    target.register_error_handler(Exception, answer_unexpected)


def _answer(
    error: OneModelError, shape: ErrorShape, extra_headers: dict[str, str] | None = None
) -> ResponseReturnValue:
    runtime().metrics.errors.labels(error.code).inc()
    if error.status >= 500 and error.code != "internal_error":
        logger.warning("%s: %s", error.code, error.message)
    headers = {**error.headers(), **(extra_headers or {})}
    return jsonify(shape(error.code, error.message)), error.status, headers


class _HTTPError(OneModelError):
    """A Werkzeug HTTP error (404, 405, 400 from parsing...) in our hierarchy."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _from_http_exception(error: HTTPException) -> OneModelError:
    status = error.code or 500
    message = error.description or error.name or "error"
    if status == PayloadTooLargeError.status:
        # Werkzeug refuses an over-long body from its Content-Length before reading it.
        return PayloadTooLargeError(message)
    code = (error.name or "error").lower().replace(" ", "_")
    return _HTTPError(status, code, message)


def _allow_header(error: HTTPException) -> dict[str, str]:
    return {name: value for name, value in error.get_headers() if name == "Allow"}
