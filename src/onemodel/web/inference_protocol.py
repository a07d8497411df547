"""The Open Inference Protocol (KServe v2) REST API under /v2, beside our own API.

The served model takes exactly one of two inputs:

- ``image``: UINT8 [N, H, W, 3], RGB pixels already at the model's input size;
- ``image_bytes``: BYTES [N], N encoded image files (JPEG, PNG...), decoded and resized as
  ``POST /predict`` does. Clients send it as binary data (each element a 4-byte
  little-endian length, then the file); in JSON an element is a string.

It has one output, ``probabilities``: FP32 [N, classes]. Asking for it with the
classification parameter K (Triton's classification extension) returns BYTES [N, K]
instead, each ``"<score>:<index>:<label>"``, highest score first. Errors use the
protocol's shape, ``{"error": "<message>"}``, with the statuses of our error hierarchy.
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
from onemodel.errors import (
    InvalidRequestError,
    ModelUnavailableError,
    OneModelError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from onemodel.web.error_handlers import protocol_shape, register_error_handlers
from onemodel.web.image_decoder import ImageDecoder
from onemodel.web.runtime import runtime
from onemodel.web.tensors import (
    HEADER_LENGTH_HEADER,
    InferRequest,
    OutputTensor,
    Tensor,
    classify,
    encode_infer_response,
    parse_infer_request,
)
from onemodel.web.uploads import client_socket

logger = logging.getLogger(__name__)

blueprint = Blueprint("inference_protocol", __name__)

SERVER_NAME = "onemodel"
EXTENSIONS = ["binary_tensor_data", "classification"]
MODEL_VERSION = "1"
PLATFORM = "keras"
IMAGE_INPUT = "image"
IMAGE_BYTES_INPUT = "image_bytes"
PROBABILITIES_OUTPUT = "probabilities"

_MODEL = "/v2/models/<name>"
_VERSIONED = "/v2/models/<name>/versions/<version>"
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@blueprint.get("/v2/health/live")
def live() -> ResponseReturnValue:
    """Liveness: this worker answers (200, empty body)."""
    return "", 200


@blueprint.get("/v2/health/ready")
def ready() -> ResponseReturnValue:
    """Readiness: 200 when the model server is ready, else 503."""
    _require_ready()
    return "", 200


@blueprint.get("/v2")
def server_metadata() -> ResponseReturnValue:
    """Describe the server: name, version and protocol extensions."""
    return jsonify(name=SERVER_NAME, version=onemodel.__version__, extensions=EXTENSIONS)


@blueprint.get(_MODEL)
@blueprint.get(_VERSIONED)
def model_metadata(name: str, version: str | None = None) -> ResponseReturnValue:
    """Describe the served model: its versions, inputs and outputs."""
    return jsonify(describe_model(_served_spec(name, version)))


@blueprint.get(f"{_MODEL}/ready")
@blueprint.get(f"{_VERSIONED}/ready")
def model_ready(name: str, version: str | None = None) -> ResponseReturnValue:
    """Model readiness: 200 when the named model is ready, 404 for another name."""
    _served_spec(name, version)
    _require_ready()
    return "", 200


@blueprint.post(f"{_MODEL}/infer")
@blueprint.post(f"{_VERSIONED}/infer")
def infer(name: str, version: str | None = None) -> ResponseReturnValue:
    """Classify a batch of images sent as an inference request."""
    spec = _served_spec(name, version)
    current = runtime()
    parsed = parse_infer_request(_read_body(), request.headers.get(HEADER_LENGTH_HEADER))
    images = images_from(parsed, spec, current.decoder)
    check_outputs(parsed)
    scores = current.predictor.predict(images, current.settings.request_timeout_s)
    header: dict[str, Any] = {"model_name": spec.name, "model_version": MODEL_VERSION}
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


def describe_model(spec: ModelInfo) -> dict[str, Any]:
    """Return the model metadata of the served model."""
    height, width = spec.input_size
    return {
        "name": spec.name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": [
            {"name": IMAGE_INPUT, "datatype": "UINT8", "shape": [-1, height, width, 3]},
            {"name": IMAGE_BYTES_INPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, len(spec.labels)]}
        ],
    }


def images_from(parsed: InferRequest, spec: ModelInfo, decoder: ImageDecoder) -> np.ndarray:
    """Return the request's images as the model's input: uint8 (N, H, W, 3)."""
    if len(parsed.inputs) != 1 or parsed.inputs[0].name not in (IMAGE_INPUT, IMAGE_BYTES_INPUT):
        names = ", ".join(repr(tensor.name) for tensor in parsed.inputs)
        raise InvalidRequestError(
            f"send exactly one input, {IMAGE_INPUT!r} (UINT8) or {IMAGE_BYTES_INPUT!r} "
            f"(BYTES); got {names}"
        )
    tensor = parsed.inputs[0]
    count = tensor.shape[0] if tensor.shape else 0
    if count > spec.max_batch_size:
        # The model server's own limit, read from it: checked before decoding anything.
        raise PayloadTooLargeError(
            f"the batch has {count} images; the model server takes at most "
            f"{spec.max_batch_size} per request (its MAX_BATCH_SIZE)"
        )
    if tensor.name == IMAGE_INPUT:
        return _pixels(tensor, spec)
    return _decoded(tensor, spec, decoder)


def check_outputs(parsed: InferRequest) -> None:
    """Refuse requested outputs the model does not have (before spending a model call)."""
    names = [requested.name for requested in parsed.outputs or ()]
    if names and names != [PROBABILITIES_OUTPUT]:
        raise InvalidRequestError(
            f"the model has one output, {PROBABILITIES_OUTPUT!r}; the request asks for {names}"
        )


def outputs_from(parsed: InferRequest, scores: np.ndarray, spec: ModelInfo) -> list[OutputTensor]:
    """Return the requested outputs (all outputs when the request names none)."""
    check_outputs(parsed)
    probabilities = np.asarray(scores, dtype=np.float32)
    default_binary = parsed.binary_data_output
    if not parsed.outputs:
        return [OutputTensor(PROBABILITIES_OUTPUT, "FP32", probabilities, default_binary)]
    outputs = []
    for requested in parsed.outputs:
        binary = default_binary if requested.binary_data is None else requested.binary_data
        if requested.classification:
            classes = classify(probabilities, spec.labels, requested.classification)
            outputs.append(OutputTensor(requested.name, "BYTES", classes, binary))
        else:
            outputs.append(OutputTensor(requested.name, "FP32", probabilities, binary))
    return outputs


def _pixels(tensor: Tensor, spec: ModelInfo) -> np.ndarray:
    height, width = spec.input_size
    shape = tensor.shape
    if (
        tensor.datatype != "UINT8"
        or len(shape) != 4
        or shape[0] < 1
        or shape[1:] != (height, width, 3)
    ):
        raise InvalidRequestError(
            f"input {IMAGE_INPUT!r} must be UINT8 [N, {height}, {width}, 3] with N >= 1; "
            f"got {tensor.datatype} {list(shape)}"
        )
    return np.array(tensor.data, dtype=np.uint8)  # a writable copy, not a view of the body


def _decoded(tensor: Tensor, spec: ModelInfo, decoder: ImageDecoder) -> np.ndarray:
    shape = tensor.shape
    if tensor.datatype != "BYTES" or not shape or shape[0] < 1 or shape[1:] not in ((), (1,)):
        raise InvalidRequestError(
            f"input {IMAGE_BYTES_INPUT!r} must be BYTES [N] (or [N, 1]) with N >= 1; "
            f"got {tensor.datatype} {list(shape)}"
        )
    images = []
    for index, data in enumerate(tensor.data.reshape(-1)):
        try:
            images.append(decoder.prepare(data, spec.input_size, client_socket(request)))
        except OneModelError as error:
            # Same status and code, naming the element at fault.
            raise type(error)(f"{IMAGE_BYTES_INPUT}[{index}]: {error.message}") from None
    return np.stack(images)


def _served_spec(name: str, version: str | None) -> ModelInfo:
    spec = runtime().predictor.spec()
    if name != spec.name:
        raise NotFound(f"unknown model {name!r}; this server serves {spec.name!r}")
    if version is not None and version != MODEL_VERSION:
        raise NotFound(
            f"model {name!r} has no version {version!r}; its versions are [{MODEL_VERSION!r}]"
        )
    return spec


def _require_ready() -> None:
    info = runtime().predictor.info()
    if not info.ready:
        raise ModelUnavailableError(info.reason or "the model server is not ready")


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
