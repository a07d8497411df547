"""Protocol buffer messages to and from the transport-neutral inference request types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from onemodel.errors import InvalidRequestError
from onemodel.grpc_server import open_inference_grpc_pb2 as pb
from onemodel.web.tensors import (
    DATATYPES,
    InferRequest,
    OutputTensor,
    RequestedOutput,
    Tensor,
    decode_binary,
    decode_values,
    encode_tensor,
    parse_shape,
)

# The InferTensorContents field that carries each datatype (FP16 travels only as raw bytes).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def infer_request_from(message: pb.ModelInferRequest) -> InferRequest:
    """Parse a ModelInferRequest: raw_input_contents or typed contents, one per input."""
    if not message.inputs:
        raise InvalidRequestError("the request needs at least one input")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidRequestError(
            f"the request has {len(message.inputs)} inputs but {len(raw)} raw_input_contents; "
            "send one per input, in order, or none"
        )
    inputs = [
        _tensor(tensor, raw[index] if raw else None) for index, tensor in enumerate(message.inputs)
    ]
    outputs = tuple(
        _requested_output(requested.name, parameters_from(requested.parameters))
        for requested in message.outputs
    )
    return InferRequest(
        inputs=tuple(inputs),
        outputs=outputs or None,
        id=message.id or None,
        parameters=parameters_from(message.parameters),
    )


def infer_response(
    model_name: str, model_version: str, request_id: str | None, outputs: Sequence[OutputTensor]
) -> pb.ModelInferResponse:
    """Build a ModelInferResponse; every output travels in raw_output_contents (as Triton's)."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id or ""
    )
    for output in outputs:
        response.outputs.add(
            name=output.name, datatype=output.datatype, shape=list(output.data.shape)
        )
        response.raw_output_contents.append(encode_tensor(output.datatype, output.data))
    return response


def model_metadata_response(description: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """Build a ModelMetadataResponse from the model description both transports share."""
    response = pb.ModelMetadataResponse(
        name=description["name"],
        versions=description["versions"],
        platform=description["platform"],
    )
    for entry in description["inputs"]:
        response.inputs.add(name=entry["name"], datatype=entry["datatype"], shape=entry["shape"])
    for entry in description["outputs"]:
        response.outputs.add(name=entry["name"], datatype=entry["datatype"], shape=entry["shape"])
    return response


def parameters_from(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """Return a message's parameters map as plain Python values."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(parameter, choice)
    return values


def _tensor(message: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Tensor:
    name = message.name
    if not name:
        raise InvalidRequestError("every input needs a non-empty name")
    datatype = message.datatype
    if datatype not in DATATYPES:
        raise InvalidRequestError(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}"
        )
    # The REST parser's checks: non-negative sizes, few dimensions, a bounded element count.
    shape = parse_shape(list(message.shape), f"input {name!r}")
    has_contents = message.HasField("contents")
    if raw is not None:
        if has_contents and _has_values(message.contents):
            raise InvalidRequestError(
                f"input {name!r} has both typed contents and raw_input_contents"
            )
        data = decode_binary(raw, datatype, shape, name)
    else:
        field = CONTENTS_FIELDS.get(datatype)
        if field is None:
            raise InvalidRequestError(f"input {name!r}: {datatype} data must be sent raw")
        data = decode_values(getattr(message.contents, field), datatype, shape, name)
    return Tensor(
        name=name,
        datatype=datatype,
        shape=shape,
        data=data,
        parameters=parameters_from(message.parameters),
    )


def _has_values(contents: pb.InferTensorContents) -> bool:
    return any(len(getattr(contents, field)) for field in set(CONTENTS_FIELDS.values()))


def _requested_output(name: str, parameters: Mapping[str, Any]) -> RequestedOutput:
    what = f"output {name!r}"
    if not name:
        raise InvalidRequestError("every requested output needs a name")
    classification = parameters.get("classification", 0)
    if not isinstance(classification, int) or isinstance(classification, bool):
        raise InvalidRequestError(f"{what}: classification must be an int64 parameter")
    if classification < 0:
        raise InvalidRequestError(f"{what}: classification must be a non-negative integer")
    return RequestedOutput(name, binary_data=True, classification=classification)
