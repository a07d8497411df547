"""Errors: statuses, codes, and pickling across the manager boundary."""

from __future__ import annotations

import pickle

import pytest

from onemodel import errors


@pytest.mark.parametrize(
    ("error_type", "status", "code"),
    [
        (errors.InvalidImageError, 400, "invalid_image"),
        (errors.InvalidRequestError, 400, "invalid_request"),
        (errors.ModelNotFoundError, 404, "not_found"),
        (errors.PayloadTooLargeError, 413, "payload_too_large"),
        (errors.TooManyPixelsError, 413, "too_many_pixels"),
        (errors.UnsupportedMediaTypeError, 415, "unsupported_media_type"),
        (errors.ModelUnavailableError, 503, "model_unavailable"),
        (errors.OverloadedError, 503, "overloaded"),
        (errors.InferenceTimeoutError, 504, "timeout"),
        (errors.InferenceError, 500, "inference_failed"),
    ],
)
def test_error_round_trips_through_pickle(
    error_type: type[errors.OneModelError], status: int, code: str
) -> None:
    error = error_type("a message for the client")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is error_type
    assert (copy.status, copy.code, copy.message) == (status, code, "a message for the client")


def test_default_message() -> None:
    assert errors.InvalidImageError().message == "the upload is not a decodable image"


def test_retryable_errors_carry_retry_after() -> None:
    assert errors.ModelUnavailableError().headers() == {"Retry-After": "1"}
    assert errors.OverloadedError().headers() == {"Retry-After": "1"}
    assert errors.InferenceTimeoutError().headers() == {}
