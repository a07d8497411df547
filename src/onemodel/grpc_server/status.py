"""The gRPC status code of each error of the hierarchy (the HTTP status's counterpart)."""

from __future__ import annotations

import grpc

from onemodel.errors import OneModelError

# By error code; anything else follows its HTTP status (_BY_STATUS), then INTERNAL.
_BY_CODE = {
    # gRPC itself answers RESOURCE_EXHAUSTED for a message over the size limit.
    "payload_too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "model_unavailable": grpc.StatusCode.UNAVAILABLE,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "not_found": grpc.StatusCode.NOT_FOUND,
}
_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(error: OneModelError) -> grpc.StatusCode:
    """Return the gRPC status code that answers this error."""
    return _BY_CODE.get(error.code) or _BY_STATUS.get(error.status, grpc.StatusCode.INTERNAL)
