"""The Open Inference Protocol (KServe v2) REST API under /v2, beside our own API.

What the model takes and returns is in ``served_model`` (shared with the gRPC server). The
health endpoints answer the protocol's JSON bodies: ``{"live": true}``, ``{"ready": true}``,
``{"name": ..., "ready": true}``; not ready is 503 with ``"ready": false`` and an
``"error"`` saying why (KServe's status and error key, so both kinds of client understand).
Errors use the protocol's shape, ``{"error": "<message>"}``, with the statuses of our error
hierarchy.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

import onemodel
from onemodel.boundary.contract import ModelInfo
from onemodel.errors import ModelUnavailableError, OneModelError, UnsupportedMediaTypeError
from onemodel.web.error_handlers import protocol_shape, register_error_handlers
from onemodel.web.runtime import runtime
from onemodel.web.served_model import (
    EXTENSIONS,
    SERVER_NAME,
    check_model,
    check_outputs,
    describe_model,
    images_from,
    outputs_from,
    predict_served,
)
from onemodel.web.tensors import HEADER_LENGTH_HEADER, encode_infer_response, parse_infer_request
from onemodel.web.uploads import client_socket

logger = logging.getLogger(__name__)

blueprint = Blueprint("inference_protocol", __name__)

_MODEL = "/v2/models/<name>"
_VERSIONED = "/v2/models/<name>/versions/<version>"
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@blueprint.get("/v2/health/live")
def live() -> ResponseReturnValue:
    """Liveness: this worker answers."""
    return jsonify(live=True)


@blueprint.get("/v2/health/ready")
def ready() -> ResponseReturnValue:
    """Readiness: ``{"ready": true}`` when the model server is ready, else 503."""
    info, reason = _ready_info()
    if info is None:
        return _not_ready({}, reason)
    return jsonify(ready=True)


@blueprint.get("/v2")
@blueprint.get("/v2/")
def server_metadata() -> ResponseReturnValue:
    """Describe the server: name, version and protocol extensions."""
    return jsonify(name=SERVER_NAME, version=onemodel.__version__, extensions=list(EXTENSIONS))


@blueprint.get(_MODEL)
@blueprint.get(_VERSIONED)
def model_metadata(name: str, version: str | None = None) -> ResponseReturnValue:
    """Describe the served model: its versions, inputs and outputs."""
    return jsonify(describe_model(_served_spec(name, version)))


@blueprint.get(f"{_MODEL}/ready")
@blueprint.get(f"{_VERSIONED}/ready")
def model_ready(name: str, version: str | None = None) -> ResponseReturnValue:
    """Model readiness: ``{"name", "ready": true}``; 503 not ready; 404 for another model."""
    info, reason = _ready_info()
    if info is None:
        return _not_ready({"name": name}, reason)
    check_model(info, name, version)
    return jsonify(name=name, ready=True)


@blueprint.post(f"{_MODEL}/infer")
@blueprint.post(f"{_VERSIONED}/infer")
def infer(name: str, version: str | None = None) -> ResponseReturnValue:
    """Classify a batch of images sent as an inference request."""
    _served_spec(name, version)  # 404 before reading the body
    current = runtime()
    parsed = parse_infer_request(_read_body(), request.headers.get(HEADER_LENGTH_HEADER))

    def prepare(spec: ModelInfo) -> np.ndarray:
        check_model(spec, name, version)
        images = images_from(parsed, spec, current.decoder, client_socket(request))
        check_outputs(parsed)
        return images

    spec, scores = predict_served(current.predictor, prepare, current.settings.request_timeout_s)
    header: dict[str, Any] = {"model_name": spec.name, "model_version": spec.version}
    if parsed.id is not None:
        header["id"] = parsed.id
    body, header_length = encode_infer_response(header, outputs_from(parsed, scores, spec))
    if header_length is None:
        return Response(body, content_type="application/json")
    response = Response(body, content_type="application/octet-stream")
    response.headers[HEADER_LENGTH_HEADER] = str(header_length)
    return response


@blueprint.route("/v2/<path:rest>", methods=_METHODS)
def unknown_path(rest: str) -> ResponseReturnValue:
    """Answer unknown /v2 paths and wrong methods in the protocol's error shape."""
    allowed = _allowed_methods(request.path)
    if allowed:
        raise MethodNotAllowed(valid_methods=allowed)
    raise NotFound(f"no such endpoint: {request.method} {request.path}")


def _served_spec(name: str, version: str | None) -> ModelInfo:
    spec = runtime().predictor.spec()
    check_model(spec, name, version)
    return spec


def _ready_info() -> tuple[ModelInfo | None, str]:
    """Return the model server's info if it is ready, else None and the reason why not."""
    try:
        info = runtime().predictor.info()
    except OneModelError as error:  # unreachable, or too slow to answer: not ready either way
        return None, error.message
    if not info.ready:
        return None, info.reason or "the model server is not ready"
    return info, ""


def _not_ready(body: dict[str, Any], reason: str) -> ResponseReturnValue:
    error = ModelUnavailableError(reason)
    return jsonify(**body, ready=False, error=error.message), error.status, error.headers()


def _read_body() -> bytes:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed"
        )
    return request.get_data(cache=False)


def _allowed_methods(path: str) -> list[str]:
    """Return the methods other /v2 routes accept for this path."""
    adapter = current_app.url_map.bind("localhost")
    allowed = []
    for method in ("GET", "POST"):
        try:
            endpoint, _ = adapter.match(path, method=method)
        except HTTPException:
            continue
        if endpoint != f"{blueprint.name}.unknown_path":
            allowed.append(method)
    return allowed


register_error_handlers(blueprint, protocol_shape)
