"""Drive a running onemodel with the KServe Python SDK; print what it saw as one JSON object.

Runs in its own virtualenv (``make kserve-venv``: the SDK pins psutil, python-dateutil and
protobuf below this project's versions), so it imports only the SDK and NumPy, never
onemodel or the tests. Usage::

    .venv-kserve/bin/python tests/support/kserve_probe.py CONFIG.json

CONFIG names ``model``, the image files ``jpeg`` and ``pixels`` (a .npy of the prepared
input), and ``rest`` (base URL) and/or ``grpc`` (host:port) to probe.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput


def _pixels_request(model: str, pixels: np.ndarray, binary: bool) -> InferRequest:
    tensor = InferInput("image", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return InferRequest(model, [tensor], request_id=f"pixels-{binary}")


def _jpeg_request(model: str, jpeg: bytes, outputs: list[RequestedOutput] | None) -> InferRequest:
    tensor = InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([jpeg], dtype=object), binary_data=True)
    return InferRequest(model, [tensor], request_outputs=outputs)


def _classes(response: Any) -> list[str]:
    # BYTES: bytes from binary data, str from JSON.
    items = response.outputs[0].as_numpy().reshape(-1)
    return [item.decode() if isinstance(item, bytes) else str(item) for item in items]


async def probe_rest(base: str, model: str, jpeg: bytes, pixels: np.ndarray) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    seen: dict[str, Any] = {
        "live": await client.is_server_live(base),
        "ready": await client.is_server_ready(base),
        "model_ready": await client.is_model_ready(base, model),
        "other_model_ready": await client.is_model_ready(base, "no-such-model"),
    }
    for binary in (False, True):
        response = await client.infer(base, _pixels_request(model, pixels, binary), model)
        seen[f"pixels_binary_{binary}"] = {
            "id": response.id,
            "model_name": response.model_name,
            "probabilities": response.outputs[0].as_numpy().tolist(),
        }
    response = await client.infer(base, _jpeg_request(model, jpeg, None), model)
    seen["jpeg"] = response.outputs[0].as_numpy().tolist()
    classify = [RequestedOutput("probabilities", {"classification": 3})]
    seen["classes"] = _classes(
        await client.infer(base, _jpeg_request(model, jpeg, classify), model)
    )
    try:
        await client.infer(base, _jpeg_request("no-such-model", jpeg, None), "no-such-model")
    except httpx.HTTPStatusError as error:
        seen["unknown_model"] = {"status": error.response.status_code, "message": str(error)}
    await client.close()
    return seen


async def probe_grpc(target: str, model: str, jpeg: bytes, pixels: np.ndarray) -> dict[str, Any]:
    client = InferenceGRPCClient(target, timeout=60, retries=0)
    seen: dict[str, Any] = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
    }
    # The SDK's client has no metadata calls; its generated stub (the SDK's own) does.
    async with grpc.aio.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        server = await stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
        seen["server_metadata"] = {
            "name": server.name,
            "version": server.version,
            "extensions": list(server.extensions),
        }
        metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=10)
        seen["model_metadata"] = {
            "name": metadata.name,
            "versions": list(metadata.versions),
            "platform": metadata.platform,
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in metadata.inputs
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in metadata.outputs
            ],
        }
    for binary in (False, True):  # typed contents, then raw_input_contents
        response = await client.infer(_pixels_request(model, pixels, binary))
        seen[f"pixels_binary_{binary}"] = {
            "id": response.id,
            "model_name": response.model_name,
            "probabilities": response.outputs[0].as_numpy().tolist(),
        }
    response = await client.infer(_jpeg_request(model, jpeg, None))
    seen["jpeg"] = response.outputs[0].as_numpy().tolist()
    classify = [RequestedOutput("probabilities", {"classification": 3})]
    seen["classes"] = _classes(await client.infer(_jpeg_request(model, jpeg, classify)))
    seen["errors"] = {}
    cases = {
        "unknown_model": (_jpeg_request("no-such-model", jpeg, None), 10),
        "not_an_image": (_jpeg_request(model, b"not an image", None), 10),
        "deadline": (_jpeg_request(model, jpeg, None), 0.0005),
    }
    for name, (request, timeout_s) in cases.items():
        try:
            await client.infer(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            seen["errors"][name] = {"code": error.code().name, "details": error.details()}
        else:
            seen["errors"][name] = {"code": "OK", "details": ""}
    await client.close()
    return seen


async def probe(config: dict[str, Any]) -> dict[str, Any]:
    with open(config["jpeg"], "rb") as handle:
        jpeg = handle.read()
    pixels = np.load(config["pixels"])
    seen: dict[str, Any] = {}
    if config.get("rest"):
        seen["rest"] = await probe_rest(config["rest"], config["model"], jpeg, pixels)
    if config.get("grpc"):
        seen["grpc"] = await probe_grpc(config["grpc"], config["model"], jpeg, pixels)
    return seen


def main() -> None:
    with open(sys.argv[1]) as handle:
        config = json.load(handle)
    print(json.dumps(asyncio.run(probe(config))))


if __name__ == "__main__":
    main()
