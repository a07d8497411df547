"""Open Inference Protocol tensors: parse infer requests, build responses (JSON and binary)."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onemodel.errors import InvalidRequestError
from onemodel.web.ranking import top_classes

# Binary tensor data extension: the size of the JSON part when binary tensors follow it.
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
# Bounds on a request shape: far above any valid request (each element takes at least a
# byte of a body under MAX_UPLOAD_BYTES), below what NumPy refuses with errors of its own
# (more than 64 dimensions; a byte size past 2**63).
MAX_DIMENSIONS = 32
MAX_ELEMENTS = 2**40

# Protocol datatype -> numpy dtype; binary data is little-endian, row major, unpadded.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """A decoded input tensor; BYTES data is an object array of ``bytes``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestedOutput:
    """An entry of the request's ``outputs``: how the client wants one output returned."""

    name: str
    binary_data: bool | None = None  # None: follow the request's binary_data_output
    classification: int = 0  # 0: the raw tensor; K: the top K classes as BYTES


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[RequestedOutput, ...] | None = None  # None: every output, default form
    id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def binary_data_output(self) -> bool:
        """Return whether outputs default to binary data (request ``binary_data_output``)."""
        return self.parameters.get("binary_data_output") is True


@dataclass(frozen=True)
class OutputTensor:
    """An output to send back: its data (an object array of ``bytes`` for BYTES)."""

    name: str
    datatype: str
    data: np.ndarray
    binary: bool = False


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse an infer request body; ``header_length`` is the Inference-Header-Content-Length."""
    header_bytes, binary = split_body(body, header_length)
    header = _load_json(header_bytes)
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequestError("the request needs a non-empty list 'inputs'")
    inputs = []
    offset = 0
    for index, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise InvalidRequestError(f"inputs[{index}] is not an object")
        size = binary_data_size(raw, f"input {raw.get('name')!r}")
        chunk = None
        if size is not None:
            if header_length is None:
                raise InvalidRequestError(
                    f"input {raw.get('name')!r} has binary_data_size but the request has no "
                    f"{HEADER_LENGTH_HEADER} header"
                )
            if offset + size > len(binary):
                raise InvalidRequestError(
                    f"input {raw.get('name')!r} declares {size} bytes of binary data; only "
                    f"{len(binary) - offset} remain after the JSON header"
                )
            chunk = binary[offset : offset + size]
            offset += size
        inputs.append(decode_tensor(raw, chunk))
    if offset != len(binary):
        raise InvalidRequestError(
            f"{len(binary)} bytes of binary data follow the JSON header but the inputs "
            f"declare {offset}"
        )
    return InferRequest(
        inputs=tuple(inputs),
        outputs=_parse_outputs(header.get("outputs")),
        id=_parse_id(header.get("id")),
        parameters=_parameters(header, "the request"),
    )


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """Split a body into its JSON header and the binary tensor data that follows it."""
    view = memoryview(body)
    if header_length is None:
        return body, view[len(body) :]
    text = header_length.strip()
    # str.isdigit() accepts any Unicode digit (int("١٢") == 12): a count is ASCII digits.
    if not (text.isascii() and text.isdigit()) or int(text) > len(body):
        raise InvalidRequestError(
            f"{HEADER_LENGTH_HEADER}={header_length!r} is not a byte count between 0 and "
            f"the body size ({len(body)})"
        )
    size = int(text)
    return body[:size], view[size:]


def binary_data_size(raw: Mapping[str, Any], what: str) -> int | None:
    """Return the ``binary_data_size`` parameter of a tensor, or None when it has none."""
    size = _parameters(raw, what).get("binary_data_size")
    if size is None:
        return None
    if not _is_int(size) or size < 0:
        raise InvalidRequestError(f"{what}: binary_data_size={size!r} is not a byte count")
    return int(size)


def decode_tensor(raw: Mapping[str, Any], binary: bytes | memoryview | None = None) -> Tensor:
    """Decode one request input from its JSON object and, if binary, its bytes."""
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("every input needs a non-empty string 'name'")
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidRequestError(
            f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}"
        )
    shape = parse_shape(raw.get("shape"), f"input {name!r}")
    parameters = _parameters(raw, f"input {name!r}")
    if binary is not None:
        if "data" in raw:
            raise InvalidRequestError(f"input {name!r} has both 'data' and binary_data_size")
        data = decode_binary(binary, datatype, shape, name)
    elif "data" in raw:
        data = decode_json_data(raw["data"], datatype, shape, name)
    else:
        raise InvalidRequestError(
            f"input {name!r} has no 'data' and no binary_data_size (shared memory is not supported)"
        )
    return Tensor(name=name, datatype=datatype, shape=shape, data=data, parameters=parameters)


def parse_shape(value: Any, what: str) -> tuple[int, ...]:
    """Check a request shape: a list of non-negative integers."""
    if not isinstance(value, list) or not all(_is_int(size) and size >= 0 for size in value):
        raise InvalidRequestError(
            f"{what}: shape must be a list of non-negative integers; got {_short(value)}"
        )
    if len(value) > MAX_DIMENSIONS:
        raise InvalidRequestError(
            f"{what}: shape has {len(value)} dimensions; at most {MAX_DIMENSIONS} are accepted"
        )
    if math.prod(value) > MAX_ELEMENTS:
        raise InvalidRequestError(f"{what}: shape {_short(value)} has over {MAX_ELEMENTS} elements")
    return tuple(int(size) for size in value)


def decode_json_data(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Turn JSON tensor data (flat row-major, or nested to match shape) into an array."""
    count = math.prod(shape)
    if datatype == "BYTES":
        array = _json_strings(data, name)
    else:
        try:
            array = np.asarray(data)
        except (ValueError, TypeError):
            raise InvalidRequestError(
                f"input {name!r}: data is neither a flat list nor nested lists of equal length"
            ) from None
        array = _cast_numbers(array, datatype, name)
    if array.shape == shape:
        return array
    if array.ndim == 1 and array.size == count:
        return array.reshape(shape)
    raise InvalidRequestError(
        f"input {name!r}: data has shape {list(array.shape)} ({array.size} elements); "
        f"shape {list(shape)} needs {count}"
    )


def decode_binary(
    data: bytes | memoryview, datatype: str, shape: tuple[int, ...], name: str
) -> np.ndarray:
    """Turn binary tensor data into an array of the given shape."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return np.array(decode_bytes_elements(data, count, name), dtype=object).reshape(shape)
    dtype = DATATYPES[datatype]
    if len(data) != count * dtype.itemsize:
        raise InvalidRequestError(
            f"input {name!r}: {len(data)} bytes of binary data; {datatype} shape "
            f"{list(shape)} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def decode_values(
    values: Sequence[Any], datatype: str, shape: tuple[int, ...], name: str
) -> np.ndarray:
    """Turn typed values (gRPC's InferTensorContents) into an array of the given shape."""
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidRequestError(
            f"input {name!r}: {len(values)} values; {datatype} shape {list(shape)} needs {count}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [bytes(value) for value in values]
        return array.reshape(shape)
    return _cast_numbers(np.asarray(values), datatype, name).reshape(shape)


def decode_bytes_elements(data: bytes | memoryview, count: int, name: str) -> list[bytes]:
    """Split binary BYTES data: each element is a 4-byte little-endian length, then bytes."""
    view = memoryview(data)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + _LENGTH.size > len(view):
            raise InvalidRequestError(f"input {name!r}: BYTES data ends inside a length prefix")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(view):
            raise InvalidRequestError(
                f"input {name!r}: BYTES element {len(elements)} declares {length} bytes; "
                f"only {len(view) - offset} remain"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidRequestError(
            f"input {name!r}: BYTES data holds {len(elements)} elements; the shape needs {count}"
        )
    return elements


def encode_bytes_elements(elements: Sequence[bytes]) -> bytes:
    """Serialise BYTES elements: each a 4-byte little-endian length, then the bytes."""
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


def encode_infer_response(
    header: Mapping[str, Any], outputs: Sequence[OutputTensor]
) -> tuple[bytes, int | None]:
    """Return the response body and, when binary data follows the JSON, the JSON's length."""
    described = []
    blobs = []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.data.shape),
        }
        if output.binary:
            blob = encode_tensor(output.datatype, output.data)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_values(output)
        described.append(entry)
    body = json.dumps({**header, "outputs": described}, separators=(",", ":")).encode()
    if not blobs:
        return body, None
    return body + b"".join(blobs), len(body)


def classify(scores: np.ndarray, labels: Sequence[str], count: int) -> np.ndarray:
    """Return the top ``count`` classes of each row as Triton classification strings.

    Each element is ``"<value>:<index>:<label>"`` (``"<value>:<index>"`` for an empty
    label), highest value first, ties by lower index; the value is printed with six
    decimals, as Triton's ``std::to_string`` does. The result is (N, count) ``bytes``.
    """
    scores = np.asarray(scores, dtype=np.float32)
    ranked = top_classes(scores, count)
    rows = [
        [_classification(float(row[index]), index, labels) for index in indices]
        for row, indices in zip(scores, ranked, strict=True)
    ]
    result = np.empty((scores.shape[0], min(count, scores.shape[1])), dtype=object)
    result[...] = rows
    return result


def _classification(value: float, index: int, labels: Sequence[str]) -> bytes:
    label = labels[index] if index < len(labels) else ""
    text = f"{value:f}:{index}:{label}" if label else f"{value:f}:{index}"
    return text.encode()


def _load_json(data: bytes) -> dict[str, Any]:
    try:
        header = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("the request's JSON header is not valid JSON") from None
    except RecursionError:
        raise InvalidRequestError("the request's JSON header is nested too deeply") from None
    if not isinstance(header, dict):
        raise InvalidRequestError("the request's JSON header is not an object")
    return header


def _parse_outputs(value: Any) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRequestError("'outputs' must be a list")
    outputs = []
    for index, raw in enumerate(value):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidRequestError(f"outputs[{index}] needs a string 'name'")
        what = f"output {raw['name']!r}"
        parameters = _parameters(raw, what)
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidRequestError(f"{what}: binary_data must be true or false")
        classification = parameters.get("classification", 0)
        if not _is_int(classification) or classification < 0:
            raise InvalidRequestError(
                f"{what}: classification must be a non-negative integer; got {classification!r}"
            )
        outputs.append(RequestedOutput(raw["name"], binary, int(classification)))
    return tuple(outputs)


def _parse_id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidRequestError("the request 'id' must be a string")


def _parameters(raw: Mapping[str, Any], what: str) -> dict[str, Any]:
    parameters = raw.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidRequestError(f"{what}: 'parameters' must be an object")
    return parameters


def _json_strings(data: Any, name: str) -> np.ndarray:
    try:
        array = np.array(data, dtype=object)
    except ValueError:
        raise InvalidRequestError(
            f"input {name!r}: data is neither a flat list nor nested lists of equal length"
        ) from None
    flat = array.reshape(-1)
    for index, element in enumerate(flat):
        if not isinstance(element, str):
            raise InvalidRequestError(
                f"input {name!r}: BYTES data in JSON must be strings; element {index} is "
                f"{type(element).__name__}"
            )
        flat[index] = element.encode()
    return array


def _cast_numbers(array: np.ndarray, datatype: str, name: str) -> np.ndarray:
    dtype = DATATYPES[datatype]
    if array.size == 0:
        return array.astype(dtype)
    kind = array.dtype.kind
    if dtype.kind == "b":
        accepted = kind == "b"
    elif dtype.kind in "iu":
        accepted = kind in "iu"
    else:
        accepted = kind in "iuf"
    if not accepted:
        expected = {"b": "true/false", "i": "integers", "u": "integers"}.get(dtype.kind, "numbers")
        raise InvalidRequestError(f"input {name!r}: {datatype} data must be {expected}")
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise InvalidRequestError(
                f"input {name!r}: {datatype} values must be between {limits.min} and {limits.max}"
            )
    return array.astype(dtype)


def encode_tensor(datatype: str, data: np.ndarray) -> bytes:
    """Return a tensor's binary form: row major, little-endian; BYTES length-prefixed."""
    if datatype == "BYTES":
        return encode_bytes_elements(list(data.reshape(-1)))
    return np.ascontiguousarray(data, dtype=DATATYPES[datatype]).tobytes()


def _json_values(output: OutputTensor) -> list[Any]:
    flat = output.data.reshape(-1)
    if output.datatype == "BYTES":
        return [element.decode() for element in flat]
    values: list[Any] = flat.astype(DATATYPES[output.datatype]).tolist()
    return values


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
