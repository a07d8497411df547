"""GRPCInferenceService: the protocol's six RPCs on the model server, one answer per call."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import grpc
import numpy as np

import onemodel
from onemodel.boundary.contract import ModelBackend, ModelInfo
from onemodel.errors import (
    InferenceTimeoutError,
    ModelUnavailableError,
    OneModelError,
    UnauthorizedError,
)
from onemodel.grpc_server import open_inference_grpc_pb2 as pb
from onemodel.grpc_server.messages import (
    infer_request_from,
    infer_response,
    model_metadata_response,
)
from onemodel.grpc_server.metrics import GrpcMetrics
from onemodel.grpc_server.status import status_code
from onemodel.settings import Settings
from onemodel.web.credentials import key_matches
from onemodel.web.image_decoder import ImageDecoder
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

SERVICE_NAME = "inference.GRPCInferenceService"
# Calls that need no API key (a liveness probe must not need a secret).
OPEN_METHODS = frozenset({"ServerLive"})
REQUEST_ID_KEY = "x-request-id"
# Kept from the client's deadline for sending the answer back.
DEADLINE_MARGIN_S = 0.05

logger = logging.getLogger(__name__)
ACCESS_LOGGER = "onemodel.grpc.access"
access_logger = logging.getLogger(ACCESS_LOGGER)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Backend(ModelBackend, Protocol):
    """The model server as this process sees it (a ModelClient, or a fake in tests)."""

    def spec(self) -> ModelInfo:
        """Return the ready model's info, or raise ModelUnavailableError."""
        ...


class InferenceService:
    """The RPC behaviours; ``generic_handler()`` registers them with a grpc.Server."""

    def __init__(
        self, settings: Settings, backend: Backend, metrics: GrpcMetrics, decoder: ImageDecoder
    ) -> None:
        self._settings = settings
        self._backend = backend
        self._metrics = metrics
        self._decoder = decoder
        self._methods: dict[str, tuple[Callable[[Any, Any], Any], Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest),
        }

    def generic_handler(self) -> Any:
        """Return the grpc handler serving every RPC of the service."""
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._instrumented(name, behaviour),
                request_deserializer=request_type.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )
            for name, (behaviour, request_type) in self._methods.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def server_live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        """Answer live: this process answers RPCs."""
        return pb.ServerLiveResponse(live=True)

    def server_ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        """Answer ready when the model server has the model loaded (false, not an error)."""
        return pb.ServerReadyResponse(ready=self._ready_info() is not None)

    def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        """Answer whether the named model is ready; NOT_FOUND for a model not served."""
        info = self._ready_info()
        if info is None:
            return pb.ModelReadyResponse(ready=False)
        check_model(info, request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    def server_metadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        """Describe the server: name, version and protocol extensions."""
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=onemodel.__version__, extensions=list(EXTENSIONS)
        )

    def model_metadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        """Describe the served model: its versions, inputs and outputs."""
        spec = self._backend.spec()
        check_model(spec, request.name, request.version)
        return model_metadata_response(describe_model(spec))

    def model_infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        """Classify the request's images, within the client's deadline."""
        check_model(self._backend.spec(), request.model_name, request.model_version)
        parsed = infer_request_from(request)

        def prepare(spec: ModelInfo) -> np.ndarray:
            check_model(spec, request.model_name, request.model_version)
            # Encoded images go through the decode sandbox, as uploads to the web workers do.
            images = images_from(parsed, spec, self._decoder)
            check_outputs(parsed)
            return images

        # The version that computed the scores labels and names the answer.
        spec, scores = predict_served(self._backend, prepare, self._timeout_s(context))
        return infer_response(
            spec.name, spec.version, parsed.id, outputs_from(parsed, scores, spec)
        )

    def _timeout_s(self, context: Any) -> float:
        """Return REQUEST_TIMEOUT_S, or less when the client's deadline is nearer.

        The model server then drops the work once nobody waits for it any more.
        """
        timeout_s = self._settings.request_timeout_s
        remaining = context.time_remaining()
        if remaining is None:
            return timeout_s
        left = float(remaining) - DEADLINE_MARGIN_S
        if left <= 0:
            raise InferenceTimeoutError("the client's deadline passed before the prediction")
        return min(timeout_s, left)

    def _authenticate(self, method: str, context: Any) -> None:
        """With API_KEYS_FILE, every call but ServerLive needs ``authorization: Bearer <key>``.

        The same keys and check as the web tier's; liveness stays open as /v2/health/live.
        """
        keys = self._settings.api_keys
        if not keys or method in OPEN_METHODS:
            return
        presented = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                presented = value
        if not key_matches(presented, keys):
            raise UnauthorizedError(
                "a valid API key is required: send the metadata authorization: Bearer <key>"
            )

    def _ready_info(self) -> ModelInfo | None:
        try:
            info = self._backend.info()
        except ModelUnavailableError:
            return None
        return info if info.ready else None

    def _instrumented(
        self, method: str, behaviour: Callable[[Any, Any], Any]
    ) -> Callable[[Any, Any], Any]:
        """Wrap a behaviour: map errors to status codes, count it, log one access line."""

        def handle(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            request_id = _request_id(context)
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            code = grpc.StatusCode.OK
            details = ""
            try:
                self._authenticate(method, context)
                return behaviour(request, context)
            except OneModelError as error:
                code, details = status_code(error), error.message
                if error.status >= 500:
                    logger.warning("%s %s: %s", method, error.code, error.message)
            except Exception:
                logger.exception("unexpected error in %s", method)
                code, details = grpc.StatusCode.INTERNAL, "internal server error"
            finally:
                elapsed = time.perf_counter() - started
                self._metrics.observe(method, code.name, elapsed)
                access_logger.info(
                    "method=%s code=%s duration_s=%.6f peer=%s pid=%d request_id=%s",
                    method,
                    code.name,
                    elapsed,
                    context.peer(),
                    os.getpid(),
                    request_id,
                )
            context.abort(code, details)  # raises: the RPC ends with this status

        return handle


def _request_id(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex
