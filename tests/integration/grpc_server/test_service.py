"""The gRPC service on a real grpc.Server (in this process) with a fake predictor.

Driven with tritonclient.grpc, the protocol's most used client, and with our own
generated messages on a plain channel where a client would hide the detail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from onemodel import __version__
from onemodel.errors import ModelUnavailableError, OverloadedError
from onemodel.grpc_server import open_inference_grpc_pb2 as pb
from onemodel.grpc_server.metrics import GrpcMetrics
from onemodel.grpc_server.server import create_server
from onemodel.settings import Settings
from onemodel.web.image_decoder import create_decoder
from tests.support.fakes import CLASSES, HEIGHT, WIDTH, FakePredictor, expected_scores
from tests.support.images import encode

MODEL = "fake"


class SlowPredictor(FakePredictor):
    """A FakePredictor whose predictions take delay_s and record the timeout asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.delay_s = 0.0
        self.timeouts: list[float] = []
        self.release = threading.Event()

    def predict(
        self, images: np.ndarray, timeout_s: float, version: str | None = None
    ) -> np.ndarray:
        self.timeouts.append(timeout_s)
        if self.delay_s:
            self.release.wait(self.delay_s)
        return super().predict(images, timeout_s, version)


@pytest.fixture
def predictor() -> SlowPredictor:
    return SlowPredictor()


@pytest.fixture
def metrics() -> GrpcMetrics:
    return GrpcMetrics()


@pytest.fixture
def target(predictor: SlowPredictor, metrics: GrpcMetrics) -> Iterator[str]:
    settings = Settings(
        grpc_port=0, grpc_threads=4, max_upload_bytes=200_000, max_image_pixels=1_000_000
    )
    # The real decode sandbox: BYTES inputs decode in its child processes.
    decoder = create_decoder(settings)
    server, port = create_server(settings, predictor, decoder, metrics)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        predictor.release.set()
        server.stop(None).wait()
        decoder.close()


@pytest.fixture
def triton(target: str) -> Iterator[Any]:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    client = grpcclient.InferenceServerClient(target)
    try:
        yield client
    finally:
        client.close()


def _call(target: str, method: str, request: Any, response_type: Any, **kwargs: Any) -> Any:
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return stub(request, **kwargs)


def _pixels(*reds: int) -> np.ndarray:
    images = np.zeros((len(reds), HEIGHT, WIDTH, 3), np.uint8)
    for index, red in enumerate(reds):
        images[index, ..., 0] = red
    return images


def _infer_pixels(triton: Any, images: np.ndarray, **kwargs: Any) -> Any:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    tensor = grpcclient.InferInput("image", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    return triton.infer(MODEL, [tensor], **kwargs)


def _error(call: Any) -> Any:
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_health_and_metadata(triton: Any, predictor: SlowPredictor) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(MODEL)
    assert triton.is_model_ready(MODEL, "1")
    server = triton.get_server_metadata(as_json=True)
    assert server == {
        "name": "onemodel",
        "version": __version__,
        "extensions": ["binary_tensor_data", "classification"],
    }
    metadata = triton.get_model_metadata(MODEL, as_json=True)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert metadata["platform"] == "tensorflow_keras"
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "UINT8", "shape": ["-1", str(HEIGHT), str(WIDTH), "3"]},
        {"name": "image_bytes", "datatype": "BYTES", "shape": ["-1"]},
    ]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": ["-1", str(CLASSES)]}
    ]
    predictor.ready = False
    assert not triton.is_server_ready()
    assert not triton.is_model_ready(MODEL)
    assert triton.is_server_live()


def test_unknown_model_and_version_are_not_found(triton: Any) -> None:
    for call in (
        lambda: triton.get_model_metadata("other"),
        lambda: triton.get_model_metadata(MODEL, "2"),
        lambda: triton.is_model_ready("other"),
        lambda: _infer_pixels_to(triton, "other"),
    ):
        error = _error(call)
        assert error.status() == "StatusCode.NOT_FOUND", error
        assert "'other'" in error.message() or "'2'" in error.message()


def _infer_pixels_to(triton: Any, model: str) -> Any:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    tensor = grpcclient.InferInput("image", [1, HEIGHT, WIDTH, 3], "UINT8")
    tensor.set_data_from_numpy(_pixels(10))
    return triton.infer(model, [tensor])


def test_infer_raw_pixels(triton: Any, predictor: SlowPredictor) -> None:
    images = _pixels(0, 100, 250)
    result = _infer_pixels(triton, images, request_id="abc")
    assert result.get_response().id == "abc"
    assert result.get_response().model_version == "1"
    probabilities = result.as_numpy("probabilities")
    np.testing.assert_allclose(probabilities, expected_scores(images), rtol=1e-6)
    np.testing.assert_array_equal(predictor.seen[-1], images)


def test_infer_typed_contents(target: str) -> None:
    images = _pixels(50, 200)
    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="image", datatype="UINT8", shape=list(images.shape))
    tensor.contents.uint_contents.extend(images.reshape(-1).tolist())
    response = _call(target, "ModelInfer", request, pb.ModelInferResponse)
    assert [output.name for output in response.outputs] == ["probabilities"]
    assert list(response.outputs[0].shape) == [2, CLASSES]
    scores = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(2, CLASSES)
    np.testing.assert_allclose(scores, expected_scores(images), rtol=1e-6)


def test_infer_encoded_images_and_classification(triton: Any) -> None:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    files = np.array([encode(_solid(120), ".png"), encode(_solid(10), ".png")], dtype=object)
    tensor = grpcclient.InferInput("image_bytes", [2], "BYTES")
    tensor.set_data_from_numpy(files)
    output = grpcclient.InferRequestedOutput("probabilities", class_count=2)
    result = triton.infer(MODEL, [tensor], outputs=[output])
    classes = result.as_numpy("probabilities")
    assert classes.shape == (2, 2)
    _, index, label = classes[0][0].decode().split(":")
    assert (int(index), label) == (5, "label_5")  # red 120 is nearest 25 * 5
    assert int(classes[1][0].decode().split(":")[1]) == 0


def _solid(red: int) -> np.ndarray:
    image = np.zeros((40, 60, 3), np.uint8)
    image[..., 0] = red
    return image


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r.inputs[0].ClearField("shape"), "shape [] needs 1"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP99"), "datatype 'FP99'"),
        (lambda r: setattr(r.inputs[0], "name", "pixels"), "send exactly one input"),
        (lambda r: r.raw_input_contents.append(b"extra"), "raw_input_contents"),
        (lambda r: r.outputs.add(name="logits"), "one output"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"short"), "bytes of binary data"),
    ],
)
def test_invalid_requests_are_invalid_argument(target: str, mutate: Any, fragment: str) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="image", datatype="UINT8", shape=[1, HEIGHT, WIDTH, 3])
    request.raw_input_contents.append(_pixels(3).tobytes())
    mutate(request)
    with pytest.raises(grpc.RpcError) as caught:
        _call(target, "ModelInfer", request, pb.ModelInferResponse)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in caught.value.details()


def test_undecodable_image_is_invalid_argument(target: str) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="image_bytes", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"this is not an image")
    with pytest.raises(grpc.RpcError) as caught:
        _call(target, "ModelInfer", request, pb.ModelInferResponse)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("image_bytes[0]: ")


def test_message_over_max_upload_bytes_is_resource_exhausted(target: str) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="image_bytes", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"\xff" * 200_001)
    with pytest.raises(grpc.RpcError) as caught:
        _call(target, "ModelInfer", request, pb.ModelInferResponse)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (OverloadedError(), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (ModelUnavailableError("the model server is not running"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("secret detail"), grpc.StatusCode.INTERNAL),
    ],
)
def test_model_server_errors_map_to_status_codes(
    triton: Any, predictor: SlowPredictor, error: Exception, code: grpc.StatusCode
) -> None:
    predictor.error = error
    failure = _error(lambda: _infer_pixels(triton, _pixels(1)))
    assert failure.status() == str(code)
    assert "secret detail" not in failure.message()


def test_client_deadline_bounds_the_prediction_timeout(
    triton: Any, predictor: SlowPredictor
) -> None:
    _infer_pixels(triton, _pixels(1), client_timeout=5.0)
    assert 4.0 < predictor.timeouts[-1] <= 5.0
    _infer_pixels(triton, _pixels(1))
    assert predictor.timeouts[-1] == Settings().request_timeout_s
    predictor.delay_s = 10.0
    started = time.monotonic()
    failure = _error(lambda: _infer_pixels(triton, _pixels(1), client_timeout=0.3))
    assert failure.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 5.0


def test_metrics_and_request_id(
    target: str, metrics: GrpcMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="onemodel.grpc.access")
    with grpc.insecure_channel(target) as channel:
        live = channel.unary_unary(
            "/inference.GRPCInferenceService/ServerLive",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=pb.ServerLiveResponse.FromString,
        )
        response, call = live.with_call(
            pb.ServerLiveRequest(), metadata=(("x-request-id", "req-42"),)
        )
    assert response.live
    assert ("x-request-id", "req-42") in tuple(call.trailing_metadata())
    with pytest.raises(grpc.RpcError):
        _call(
            target, "ModelMetadata", pb.ModelMetadataRequest(name="other"), pb.ModelMetadataResponse
        )
    assert metrics.requests.labels("ServerLive", "OK")._value.get() == 1
    assert metrics.requests.labels("ModelMetadata", "NOT_FOUND")._value.get() == 1
    lines = [record.getMessage() for record in caplog.records]
    assert any(
        "method=ServerLive code=OK" in line and "request_id=req-42" in line for line in lines
    )
    assert any("method=ModelMetadata code=NOT_FOUND" in line for line in lines)


def test_api_keys_guard_every_call_but_liveness(predictor: SlowPredictor) -> None:
    settings = Settings(grpc_port=0, api_keys=(b"key-0123456789abcdef",))
    decoder = create_decoder(settings.replace(decoder_processes=0))
    server, port = create_server(settings, predictor, decoder)
    server.start()
    target = f"127.0.0.1:{port}"
    try:
        assert _call(target, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
        request = pb.ModelMetadataRequest(name=MODEL)
        for metadata in ((), (("authorization", "Bearer wrong-key-0123456789"),)):
            with pytest.raises(grpc.RpcError) as caught:
                _call(target, "ModelMetadata", request, pb.ModelMetadataResponse, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "key-0123456789abcdef" not in caught.value.details()
        good = (("authorization", "Bearer key-0123456789abcdef"),)
        answer = _call(target, "ModelMetadata", request, pb.ModelMetadataResponse, metadata=good)
        assert answer.name == MODEL
    finally:
        server.stop(None).wait()
        decoder.close()
