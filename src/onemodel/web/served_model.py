"""The served model in Open Inference Protocol terms, for both transports (REST and gRPC).

The model takes exactly one of two inputs:

- ``image``: UINT8 [N, H, W, 3], RGB pixels already at the model's input size;
- ``image_bytes``: BYTES [N], N encoded image files (JPEG, PNG...), decoded and resized as
  ``POST /predict`` does, with the same limits. Over REST an element is a string in JSON
  or, as binary data, a 4-byte little-endian length and then the file; over gRPC an element
  of ``bytes_contents`` or the same length-prefixed raw bytes.

It has one output, ``probabilities``: FP32 [N, classes]. Asking for it with the
classification parameter K (Triton's classification extension) returns BYTES [N, K]
instead, each ``"<score>:<index>:<label>"``, highest score first.

Pure (no Flask, no gRPC): each transport parses its wire format into an ``InferRequest`` and
calls these functions, so a request means the same whichever way it came.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from onemodel.boundary.contract import ModelBackend, ModelInfo
from onemodel.errors import (
    InvalidRequestError,
    ModelChangedError,
    ModelNotFoundError,
    OneModelError,
    PayloadTooLargeError,
)
from onemodel.web.image_decoder import ImageDecoder
from onemodel.web.tensors import InferRequest, OutputTensor, Tensor, classify

SERVER_NAME = "onemodel"
EXTENSIONS = ("binary_tensor_data", "classification")
# The protocol's "<project>_<format>" platform name: a Keras model run by TensorFlow.
PLATFORM = "tensorflow_keras"
IMAGE_INPUT = "image"
IMAGE_BYTES_INPUT = "image_bytes"
PROBABILITIES_OUTPUT = "probabilities"


# Tries of one prediction when the served version changes under it (each swap costs one).
VERSION_ATTEMPTS = 3


class ServedBackend(ModelBackend, Protocol):
    """The model server as a transport sees it: predictions and the served model's info."""

    def spec(self) -> ModelInfo:
        """Return the ready model's info, or raise ModelUnavailableError."""
        ...


def predict_served(
    predictor: ServedBackend, prepare: Callable[[ModelInfo], np.ndarray], timeout_s: float
) -> tuple[ModelInfo, np.ndarray]:
    """Prepare images for the served version and predict them on exactly that version.

    Returns that version's spec with the scores, so the answer is labelled and named by the
    version that computed it. When a new version took over in between (ModelChangedError),
    the spec is read again and the images prepared again for it.
    """
    for attempt in range(1, VERSION_ATTEMPTS + 1):
        spec = predictor.spec()
        images = prepare(spec)
        try:
            return spec, predictor.predict(images, timeout_s, version=spec.version or None)
        except ModelChangedError:
            if attempt == VERSION_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def check_model(spec: ModelInfo, name: str, version: str | None) -> None:
    """Raise ModelNotFoundError unless name (and version, if one is given) is served."""
    if name != spec.name:
        raise ModelNotFoundError(f"unknown model {name!r}; this server serves {spec.name!r}")
    if version and version != spec.version:
        raise ModelNotFoundError(
            f"model {name!r} has no version {version!r} served now; it serves [{spec.version!r}]"
        )


def describe_model(spec: ModelInfo) -> dict[str, Any]:
    """Return the model metadata of the served model."""
    height, width = spec.input_size
    return {
        "name": spec.name,
        # The versions a request may name: the one served now (/readyz lists the repository).
        "versions": [spec.version],
        "platform": PLATFORM,
        "inputs": [
            {"name": IMAGE_INPUT, "datatype": "UINT8", "shape": [-1, height, width, 3]},
            {"name": IMAGE_BYTES_INPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, len(spec.labels)]}
        ],
    }


def images_from(
    parsed: InferRequest,
    spec: ModelInfo,
    decoder: ImageDecoder,
    client: socket.socket | None = None,
) -> np.ndarray:
    """Return the request's images as the model's input: uint8 (N, H, W, 3).

    Encoded images go through ``decoder`` (contained decoding, as for uploads); ``client``,
    when the transport has one, lets it give up on a client that went away.
    """
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
    return _decoded(tensor, spec, decoder, client)


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


def _decoded(
    tensor: Tensor, spec: ModelInfo, decoder: ImageDecoder, client: socket.socket | None
) -> np.ndarray:
    shape = tensor.shape
    if tensor.datatype != "BYTES" or not shape or shape[0] < 1 or shape[1:] not in ((), (1,)):
        raise InvalidRequestError(
            f"input {IMAGE_BYTES_INPUT!r} must be BYTES [N] (or [N, 1]) with N >= 1; "
            f"got {tensor.datatype} {list(shape)}"
        )
    images = []
    for index, data in enumerate(tensor.data.reshape(-1)):
        try:
            images.append(decoder.prepare(data, spec.input_size, client))
        except OneModelError as error:
            # Same status and code, naming the element at fault.
            raise type(error)(f"{IMAGE_BYTES_INPUT}[{index}]: {error.message}") from None
    return np.stack(images)
