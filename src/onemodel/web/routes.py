"""HTTP routes: read the request, call the use case, answer JSON. Nothing more."""

from __future__ import annotations

import socket

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from onemodel.errors import InferenceTimeoutError, ModelUnavailableError, OneModelError
from onemodel.web.metrics import CONTENT_TYPE, model_server_up_text
from onemodel.web.predictions import predict_upload
from onemodel.web.runtime import runtime
from onemodel.web.uploads import client_socket, read_upload

blueprint = Blueprint("onemodel", __name__)


def _predict_request() -> dict[str, object]:
    current = runtime()
    return predict_upload(
        current.predictor,
        current.decoder,
        read_upload(request),
        request.args.get("top_k"),
        current.settings,
        client=client_socket(request),
    )


@blueprint.post("/predict")
def predict() -> ResponseReturnValue:
    """Classify an uploaded image; answer the top-k classes as JSON."""
    return jsonify(_predict_request())


@blueprint.post("/hello")
def hello() -> ResponseReturnValue:
    """The tutorial's endpoint: answer the top-1 label as plain text."""
    body = _predict_request()
    label = body["predictions"][0]["label"]  # type: ignore[index]
    return f"{label}\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness: this worker answers."""
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Readiness: 200 with model details while at least one model server is ready."""
    try:
        info = runtime().predictor.info()
    except (ModelUnavailableError, InferenceTimeoutError) as error:
        # A hung model server times out: for a readiness probe that means "not ready".
        return jsonify(ready=False, reason=error.message), 503, {"Retry-After": "1"}
    if not info.ready:
        reason = info.reason or "the model server is not ready"
        body: dict[str, object] = {"ready": False, "reason": reason}
        if "replicas" in info.extra:  # a pool lists every replica, ready or not
            body["replicas"] = info.extra["replicas"]
        return jsonify(body), 503, {"Retry-After": "1"}
    settings = runtime().settings
    if settings.grpc_port is None:
        return jsonify(info.public())
    # GRPC_PORT is set: the gRPC server process (the master's) must be up too.
    if not _listening(settings.grpc_host, settings.grpc_port):
        reason = f"the gRPC server is not listening on port {settings.grpc_port}"
        return jsonify(ready=False, reason=reason), 503, {"Retry-After": "1"}
    return jsonify({**info.public(), "grpc_port": settings.grpc_port})


@blueprint.get("/metrics")
def metrics() -> ResponseReturnValue:
    """Prometheus metrics: every worker's figures plus the model server's."""
    current = runtime()
    try:
        model_server_text = current.predictor.metrics_text() + model_server_up_text(True)
    except OneModelError:
        model_server_text = model_server_up_text(False)
    return Response(current.metrics.render(model_server_text), content_type=CONTENT_TYPE)


def _listening(host: str, port: int) -> bool:
    """Return whether host:port accepts a TCP connection (0.0.0.0 and :: via loopback)."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=1.0):
            return True
    except OSError:
        return False
