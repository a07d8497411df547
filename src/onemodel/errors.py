"""The error hierarchy: every error the service answers with, its HTTP status and code."""

from __future__ import annotations


class OneModelError(Exception):
    """Base error: carries an HTTP status, a short machine code and a client-safe message.

    Instances cross the manager boundary, so they keep all their state in ``args``
    (that is what pickling an exception preserves).
    """

    status: int = 500
    code: str = "internal_error"
    default_message: str = "internal error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        """Return the client-safe message."""
        return str(self.args[0])

    def headers(self) -> dict[str, str]:
        """Return extra HTTP headers for the response."""
        return {}


class ConfigError(OneModelError):
    code = "config_error"
    default_message = "invalid configuration"


class ModelLoadError(OneModelError):
    code = "model_load_failed"
    default_message = "the model could not be loaded"


class InvalidRequestError(OneModelError):
    status = 400
    code = "invalid_request"
    default_message = "invalid request"


class MalformedRequestError(InvalidRequestError):
    """The HTTP framing itself is wrong (request line, headers, chunked encoding)."""

    code = "malformed_request"
    default_message = "the HTTP request is malformed"


class UnauthorizedError(OneModelError):
    status = 401
    code = "unauthorized"
    default_message = "a valid API key is required: send the header Authorization: Bearer <key>"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="onemodel"'}


class RequestTimeoutError(OneModelError):
    status = 408
    code = "request_timeout"
    default_message = "the request did not arrive in time"


class RequestLineTooLongError(OneModelError):
    status = 414
    code = "request_line_too_long"
    default_message = "the request line is too long"


class ExpectationFailedError(OneModelError):
    status = 417
    code = "expectation_failed"
    default_message = "the Expect header cannot be met"


class HeadersTooLargeError(OneModelError):
    status = 431
    code = "headers_too_large"
    default_message = "the request headers are too many or too large"


class UnsupportedTransferCodingError(OneModelError):
    status = 501
    code = "unsupported_transfer_coding"
    default_message = "the Transfer-Encoding is not supported (send chunked, or none)"


class InvalidImageError(OneModelError):
    status = 400
    code = "invalid_image"
    default_message = "the upload is not a decodable image"


class ModelNotFoundError(OneModelError):
    status = 404
    code = "not_found"
    default_message = "no such model"


class PayloadTooLargeError(OneModelError):
    status = 413
    code = "payload_too_large"
    default_message = "the upload is too large"


class TooManyPixelsError(OneModelError):
    status = 413
    code = "too_many_pixels"
    default_message = "the image has too many pixels"


class UnsupportedMediaTypeError(OneModelError):
    status = 415
    code = "unsupported_media_type"
    default_message = "unsupported media type"


class _RetryableError(OneModelError):
    """An error the client should retry after a pause (503 with ``Retry-After``)."""

    status = 503
    retry_after_s: int = 1

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ModelUnavailableError(_RetryableError):
    code = "model_unavailable"
    default_message = "the model server is not available"


class ModelServerStoppingError(ModelUnavailableError):
    """The model server is draining after SIGTERM: another replica (or a retry) will answer."""

    code = "model_server_stopping"
    default_message = "the model server is shutting down"


class ModelChangedError(ModelUnavailableError):
    """A new model version took over after the caller read the old one's input size and labels.

    The web tier re-reads the model's spec and prepares the request again.
    """

    code = "model_changed"
    default_message = "the served model version changed; retry"


class OverloadedError(_RetryableError):
    code = "overloaded"
    default_message = "the model server queue is full; retry later"


class ServerBusyError(_RetryableError):
    code = "busy"
    default_message = "the web worker holds too many connections or buffered requests; retry"


class InferenceTimeoutError(OneModelError):
    status = 504
    code = "timeout"
    default_message = "the prediction did not finish in time"


class InferenceError(OneModelError):
    code = "inference_failed"
    default_message = "the model failed on this batch"
