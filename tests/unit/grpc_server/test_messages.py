"""Protocol buffer messages to and from the transport-neutral request types."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from onemodel.errors import InvalidRequestError
from onemodel.grpc_server import open_inference_grpc_pb2 as pb
from onemodel.grpc_server.messages import (
    infer_request_from,
    infer_response,
    model_metadata_response,
    parameters_from,
)
from onemodel.web.tensors import OutputTensor


def _request(datatype: str = "UINT8", shape: tuple[int, ...] = (2, 3)) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="7")
    request.inputs.add(name="x", datatype=datatype, shape=list(shape))
    return request


def test_raw_input_contents_become_an_array() -> None:
    request = _request()
    request.raw_input_contents.append(bytes(range(6)))
    parsed = infer_request_from(request)
    assert parsed.id == "7" and parsed.outputs is None
    (tensor,) = parsed.inputs
    assert tensor.name == "x" and tensor.shape == (2, 3)
    np.testing.assert_array_equal(tensor.data, np.arange(6, dtype=np.uint8).reshape(2, 3))


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("UINT8", "uint_contents", [0, 255, 7, 8, 9, 10], np.uint8),
        ("INT16", "int_contents", [-5, 5, 0, 1, 2, 3], np.int16),
        ("INT64", "int64_contents", [-(2**40), 1, 2, 3, 4, 5], np.int64),
        ("FP32", "fp32_contents", [0.5, 1.5, 2.0, 3.0, 4.0, 5.0], np.float32),
        ("BOOL", "bool_contents", [True, False, True, True, False, False], np.bool_),
    ],
)
def test_typed_contents_become_an_array(
    datatype: str, field: str, values: list[object], dtype: type
) -> None:
    request = _request(datatype)
    getattr(request.inputs[0].contents, field).extend(values)
    (tensor,) = infer_request_from(request).inputs
    assert tensor.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(tensor.data, np.array(values, dtype=dtype).reshape(2, 3))


def test_bytes_contents_and_raw_bytes_agree() -> None:
    typed = _request("BYTES", (2,))
    typed.inputs[0].contents.bytes_contents.extend([b"ab", b""])
    raw = _request("BYTES", (2,))
    raw.raw_input_contents.append(struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0))
    for request in (typed, raw):
        (tensor,) = infer_request_from(request).inputs
        assert list(tensor.data) == [b"ab", b""]


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda r: r.inputs[0].contents.uint_contents.extend([1, 2]), "2 values"),
        (lambda r: r.inputs[0].contents.uint_contents.extend([256] * 6), "between 0 and 255"),
        (lambda r: r.raw_input_contents.append(b"\x00" * 5), "needs 6"),
        (lambda r: r.raw_input_contents.extend([b"\x00" * 6, b""]), "raw_input_contents"),
        (lambda r: setattr(r.inputs[0], "datatype", "STRING"), "datatype 'STRING'"),
        (lambda r: setattr(r.inputs[0], "name", ""), "non-empty name"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -1), "non-negative"),
        (lambda r: r.inputs[0].shape.extend([1] * 70), "dimensions"),
        (lambda r: r.inputs[0].shape.extend([2**40, 2**40]), "elements"),
    ],
)
def test_malformed_inputs_are_invalid_requests(build: object, fragment: str) -> None:
    request = _request()
    build(request)  # type: ignore[operator]
    with pytest.raises(InvalidRequestError, match=fragment):
        infer_request_from(request)


def test_both_typed_and_raw_contents_are_refused() -> None:
    request = _request()
    request.inputs[0].contents.uint_contents.extend(range(6))
    request.raw_input_contents.append(bytes(6))
    with pytest.raises(InvalidRequestError, match="both"):
        infer_request_from(request)


def test_fp16_must_travel_raw() -> None:
    with pytest.raises(InvalidRequestError, match="sent raw"):
        infer_request_from(_request("FP16"))


def test_requested_outputs_and_parameters() -> None:
    request = _request()
    request.raw_input_contents.append(bytes(6))
    request.parameters["priority"].int64_param = 3
    request.parameters["tag"].string_param = "x"
    output = request.outputs.add(name="probabilities")
    output.parameters["classification"].int64_param = 2
    parsed = infer_request_from(request)
    assert parsed.parameters == {"priority": 3, "tag": "x"}
    assert parsed.outputs is not None
    assert parsed.outputs[0].name == "probabilities" and parsed.outputs[0].classification == 2
    output.parameters["classification"].string_param = "two"
    with pytest.raises(InvalidRequestError, match="int64"):
        infer_request_from(request)


def test_parameters_from_reads_each_kind() -> None:
    message = pb.ModelInferRequest()
    message.parameters["a"].bool_param = True
    message.parameters["b"].double_param = 0.25
    message.parameters["c"].uint64_param = 2**63
    message.parameters["d"].CopyFrom(pb.InferParameter())
    assert parameters_from(message.parameters) == {"a": True, "b": 0.25, "c": 2**63, "d": None}


def test_infer_response_uses_raw_output_contents() -> None:
    scores = np.array([[0.25, 0.75]], np.float32)
    classes = np.array([[b"0.75:1:b"]], dtype=object)
    response = infer_response(
        "m",
        "1",
        "id-1",
        [OutputTensor("p", "FP32", scores), OutputTensor("c", "BYTES", classes)],
    )
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "id-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("p", "FP32", [1, 2]),
        ("c", "BYTES", [1, 1]),
    ]
    assert response.raw_output_contents[0] == scores.tobytes()
    assert response.raw_output_contents[1] == struct.pack("<I", 8) + b"0.75:1:b"
    assert not response.outputs[0].HasField("contents")


def test_model_metadata_response() -> None:
    response = model_metadata_response(
        {
            "name": "m",
            "versions": ["1"],
            "platform": "tensorflow_keras",
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, 4, 4, 3]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        }
    )
    assert response.name == "m" and list(response.versions) == ["1"]
    assert list(response.inputs[0].shape) == [-1, 4, 4, 3]
    assert response.outputs[0].name == "probabilities"
