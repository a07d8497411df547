"""The Open Inference Protocol tensor codec: JSON and binary tensors, BYTES, classification."""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import numpy as np
import pytest

from onemodel.errors import InvalidRequestError
from onemodel.web.tensors import (
    OutputTensor,
    RequestedOutput,
    classify,
    decode_binary,
    decode_bytes_elements,
    decode_json_data,
    decode_tensor,
    decode_values,
    encode_bytes_elements,
    encode_infer_response,
    encode_tensor,
    parse_infer_request,
    split_body,
)


def _binary_request(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), str(len(text))


def test_json_data_flat_and_nested_give_the_same_array() -> None:
    nested = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    flat = list(range(1, 9))
    expected = np.arange(1, 9, dtype=np.uint8).reshape(2, 2, 2)
    for data in (nested, flat):
        array = decode_json_data(data, "UINT8", (2, 2, 2), "x")
        assert array.dtype == np.uint8
        np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize(
    ("data", "datatype", "shape", "message"),
    [
        ([1, 2, 3], "UINT8", (2, 2), "shape [2, 2] needs 4"),
        ([[1, 2], [3]], "UINT8", (2, 2), "nested lists of equal length"),
        ([[1, 2], [3, 4]], "UINT8", (4, 1), "data has shape [2, 2]"),
        ([1, 256], "UINT8", (2,), "between 0 and 255"),
        ([-1, 2], "UINT8", (2,), "between 0 and 255"),
        ([1.5, 2], "UINT8", (2,), "must be integers"),
        (["a", "b"], "INT32", (2,), "must be integers"),
        ([1, 0], "BOOL", (2,), "true/false"),
        (["a", 3], "BYTES", (2,), "element 1 is int"),
        ([["a"], ["b", "c"]], "BYTES", (2, 1), "must be strings"),
    ],
)
def test_bad_json_data(data: Any, datatype: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        decode_json_data(data, datatype, shape, "x")


def test_json_data_of_other_datatypes() -> None:
    floats = decode_json_data([[1, 2.5]], "FP32", (1, 2), "x")
    assert floats.dtype == np.float32 and floats.tolist() == [[1.0, 2.5]]
    flags = decode_json_data([True, False], "BOOL", (2,), "x")
    assert flags.dtype == np.bool_ and flags.tolist() == [True, False]
    strings = decode_json_data([["héllo", ""]], "BYTES", (1, 2), "x")
    assert strings.tolist() == [["héllo".encode(), b""]]
    empty = decode_json_data([], "FP32", (0, 3), "x")
    assert empty.shape == (0, 3) and empty.dtype == np.float32


def test_bytes_elements_round_trip_with_little_endian_lengths() -> None:
    elements = [b"", b"abc", bytes(range(256)) * 3]
    encoded = encode_bytes_elements(elements)
    assert encoded[:8] == struct.pack("<I", 0) + struct.pack("<I", 3)
    assert len(encoded) == 3 * 4 + 3 + 768
    assert decode_bytes_elements(encoded, 3, "x") == elements


@pytest.mark.parametrize(
    ("data", "count", "message"),
    [
        (b"\x05\x00\x00\x00abc", 1, "declares 5 bytes; only 3 remain"),
        (b"\x01\x00\x00\x00a\x02\x00", 2, "ends inside a length prefix"),
        (b"\x01\x00\x00\x00a", 2, "holds 1 elements; the shape needs 2"),
    ],
)
def test_bad_bytes_elements(data: bytes, count: int, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        decode_bytes_elements(data, count, "x")


def test_binary_numbers_are_little_endian_row_major() -> None:
    values = np.arange(6, dtype="<f4").reshape(2, 3)
    array = decode_binary(values.tobytes(), "FP32", (2, 3), "x")
    np.testing.assert_array_equal(array, values)
    big_endian = np.arange(2, dtype=">u2").tobytes()
    assert decode_binary(big_endian, "UINT16", (2,), "x").tolist() == [0, 256]
    with pytest.raises(
        InvalidRequestError, match="23 bytes of binary data; FP32 shape \\[2, 3\\] needs 24"
    ):
        decode_binary(values.tobytes()[:-1], "FP32", (2, 3), "x")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"datatype": "UINT8", "shape": [1], "data": [1]}, "non-empty string 'name'"),
        (
            {"name": "x", "datatype": "UINT7", "shape": [1], "data": [1]},
            "datatype 'UINT7' is not one of",
        ),
        ({"name": "x", "datatype": "UINT8", "shape": [1, -1], "data": [1]}, "shape must be a list"),
        ({"name": "x", "datatype": "UINT8", "shape": "1", "data": [1]}, "shape must be a list"),
        ({"name": "x", "datatype": "UINT8", "shape": [True], "data": [1]}, "shape must be a list"),
        ({"name": "x", "datatype": "UINT8", "shape": [1]}, "no 'data' and no binary_data_size"),
        (
            {"name": "x", "datatype": "UINT8", "shape": [1], "data": [1], "parameters": []},
            "'parameters' must be an object",
        ),
    ],
)
def test_bad_tensor_headers(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        decode_tensor(raw)


def test_json_request_with_outputs_and_id() -> None:
    body = json.dumps(
        {
            "id": "req-1",
            "inputs": [
                {
                    "name": "image",
                    "datatype": "UINT8",
                    "shape": [1, 1, 2, 3],
                    "data": [1, 2, 3, 4, 5, 6],
                }
            ],
            "outputs": [
                {"name": "probabilities", "parameters": {"classification": 3, "binary_data": True}}
            ],
            "parameters": {"binary_data_output": False},
        }
    ).encode()
    parsed = parse_infer_request(body)
    assert parsed.id == "req-1"
    assert parsed.outputs == (RequestedOutput("probabilities", binary_data=True, classification=3),)
    assert parsed.binary_data_output is False
    (tensor,) = parsed.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("image", "UINT8", (1, 1, 2, 3))
    assert tensor.data.reshape(-1).tolist() == [1, 2, 3, 4, 5, 6]


def test_binary_request_splits_tensors_in_order() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    files = encode_bytes_elements([b"first", b"second file"])
    body, length = _binary_request(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "UINT8",
                    "shape": [1, 2, 2, 3],
                    "parameters": {"binary_data_size": 12},
                },
                {
                    "name": "b",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(files)},
                },
                {"name": "c", "datatype": "INT32", "shape": [2, 1], "data": [[7], [8]]},
            ],
            "parameters": {"binary_data_output": True},
        },
        pixels.tobytes(),
        files,
    )
    parsed = parse_infer_request(body, length)
    first, second, third = parsed.inputs
    np.testing.assert_array_equal(first.data, pixels)
    assert second.data.tolist() == [b"first", b"second file"]
    assert third.data.tolist() == [[7], [8]]
    assert parsed.outputs is None
    assert parsed.binary_data_output is True


@pytest.mark.parametrize(
    ("extra", "length_delta", "message"),
    [
        (b"", 0, "only 2 remain"),  # the tensor says 3 bytes, 2 follow
        (b"\x00\x00", 0, "4 bytes of binary data follow the JSON header but the inputs declare 3"),
        (b"\x00", 10_000, "not a byte count between 0 and the body size"),
    ],
)
def test_binary_sizes_must_add_up(extra: bytes, length_delta: int, message: str) -> None:
    header = {
        "inputs": [
            {"name": "a", "datatype": "UINT8", "shape": [3], "parameters": {"binary_data_size": 3}}
        ]
    }
    body, length = _binary_request(header, b"\x01\x02", extra)
    with pytest.raises(InvalidRequestError, match=message):
        parse_infer_request(body, str(int(length) + length_delta))


def test_binary_data_needs_the_header_length() -> None:
    body, _ = _binary_request(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "UINT8",
                    "shape": [1],
                    "parameters": {"binary_data_size": 1},
                }
            ]
        }
    )
    with pytest.raises(InvalidRequestError, match="Inference-Header-Content-Length"):
        parse_infer_request(body, None)


def test_split_body() -> None:
    header, binary = split_body(b'{"a":1}xyz', "7")
    assert header == b'{"a":1}' and bytes(binary) == b"xyz"
    header, binary = split_body(b'{"a":1}', None)
    assert header == b'{"a":1}' and bytes(binary) == b""
    for bad in ("-1", "abc", "8"):
        with pytest.raises(InvalidRequestError):
            split_body(b'{"a":1}', bad)


def _with_input(**fields: Any) -> bytes:
    tensor = {"name": "a", "datatype": "UINT8", "shape": [1], "data": [1]}
    return json.dumps({"inputs": [tensor], **fields}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1]", "not an object"),
        (b"{}", "non-empty list 'inputs'"),
        (b'{"inputs": []}', "non-empty list 'inputs'"),
        (b'{"inputs": [1]}', "inputs\\[0\\] is not an object"),
        (_with_input(id=5), "'id' must be a string"),
        (_with_input(outputs={}), "'outputs' must be a list"),
        (_with_input(outputs=[{}]), "needs a string 'name'"),
        (
            _with_input(outputs=[{"name": "p", "parameters": {"classification": -1}}]),
            "non-negative integer",
        ),
        (
            _with_input(outputs=[{"name": "p", "parameters": {"binary_data": "yes"}}]),
            "true or false",
        ),
    ],
)
def test_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_infer_request(body)


def test_json_response_has_flat_data_and_no_header_length() -> None:
    scores = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    body, length = encode_infer_response(
        {"model_name": "m", "id": "7"}, [OutputTensor("p", "FP32", scores)]
    )
    assert length is None
    decoded = json.loads(body)
    assert decoded == {
        "model_name": "m",
        "id": "7",
        "outputs": [
            {"name": "p", "datatype": "FP32", "shape": [2, 2], "data": [0.25, 0.75, 0.5, 0.5]}
        ],
    }


def test_binary_response_puts_tensors_after_the_json() -> None:
    scores = np.array([[0.1, 0.9]], dtype=np.float32)
    labels = np.array([[b"0.9:1:b", b"0.1:0:a"]], dtype=object)
    body, length = encode_infer_response(
        {"model_name": "m"},
        [
            OutputTensor("p", "FP32", scores, binary=True),
            OutputTensor("c", "BYTES", labels, binary=True),
        ],
    )
    assert length is not None
    header = json.loads(body[:length])
    first, second = header["outputs"]
    assert first == {
        "name": "p",
        "datatype": "FP32",
        "shape": [1, 2],
        "parameters": {"binary_data_size": 8},
    }
    assert second["parameters"]["binary_data_size"] == 2 * 4 + 14
    rest = body[length:]
    np.testing.assert_array_equal(np.frombuffer(rest[:8], "<f4"), scores.reshape(-1))
    assert decode_bytes_elements(rest[8:], 2, "c") == [b"0.9:1:b", b"0.1:0:a"]


def test_bytes_output_in_json_is_strings() -> None:
    body, _ = encode_infer_response(
        {}, [OutputTensor("c", "BYTES", np.array([[b"0.5:1:x"]], dtype=object))]
    )
    assert json.loads(body)["outputs"][0]["data"] == ["0.5:1:x"]


def test_classify_orders_by_score_with_triton_strings() -> None:
    scores = np.array([[0.1, 0.6, 0.3], [0.2, 0.4, 0.4]], dtype=np.float32)
    result = classify(scores, ["cat", "dog", ""], 2)
    assert result.shape == (2, 2)
    assert result.tolist() == [
        [b"0.600000:1:dog", b"0.300000:2"],  # an empty label leaves the label part out
        [b"0.400000:1:dog", b"0.400000:2"],  # ties: lower index first
    ]
    # More classes than the model has: every class, still ranked.
    assert classify(scores[:1], ["a", "b", "c"], 10).tolist() == [
        [b"0.600000:1:b", b"0.300000:2:c", b"0.100000:0:a"]
    ]


# Hostile /v2 requests (issue 10, class 7): each is a clear 400, never a 500.


def test_json_nested_100000_deep_is_refused() -> None:
    body = b'{"inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidRequestError, match="nested too deeply"):
        parse_infer_request(body)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([1] * 65, "65 dimensions"),
        ([1] * 33, "33 dimensions"),
        ([2**40, 2**40, 2**40], "elements"),
        ([2**62, 2**62], "elements"),
    ],
)
def test_shapes_numpy_cannot_hold_are_refused(shape: list[int], message: str) -> None:
    body = json.dumps(
        {"inputs": [{"name": "image", "datatype": "UINT8", "shape": shape, "data": [1]}]}
    ).encode()
    with pytest.raises(InvalidRequestError, match=message):
        parse_infer_request(body)


@pytest.mark.parametrize("length", ["\u0661\u0662", "\u00b2", "1\u0662", "+12", "0x10"])
def test_a_header_length_of_anything_but_ascii_digits_is_refused(length: str) -> None:
    header = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1], "data": [1]}]}
    body = json.dumps(header).encode() + b"\0" * 40
    with pytest.raises(InvalidRequestError, match="is not a byte count"):
        parse_infer_request(body, length)


def test_decode_values_casts_checks_and_reshapes() -> None:
    array = decode_values([1, 2, 3, 4], "UINT16", (2, 2), "x")
    assert array.dtype == np.dtype("<u2") and array.tolist() == [[1, 2], [3, 4]]
    assert encode_tensor("UINT16", array) == np.arange(1, 5, dtype="<u2").tobytes()
    assert decode_values([b"a", b"bc"], "BYTES", (2,), "x").tolist() == [b"a", b"bc"]
    with pytest.raises(InvalidRequestError, match="between 0 and 65535"):
        decode_values([70000], "UINT16", (1,), "x")
    with pytest.raises(InvalidRequestError, match="3 values"):
        decode_values([1, 2, 3], "INT32", (2, 2), "x")
