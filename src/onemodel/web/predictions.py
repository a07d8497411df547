"""Turn uploaded bytes into ranked predictions: the use case shared by every HTTP route."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from onemodel.boundary.contract import ModelBackend, ModelInfo
from onemodel.errors import InvalidRequestError
from onemodel.settings import Settings
from onemodel.web.image_decoder import ImageDecoder
from onemodel.web.ranking import top_classes
from onemodel.web.served_model import predict_served


class Predictor(ModelBackend, Protocol):
    """The model server as the web tier sees it (a ModelClient, or a fake in tests)."""

    def spec(self) -> ModelInfo:
        """Return the ready model's info, or raise ModelUnavailableError."""
        ...


def parse_top_k(text: str | None, default: int, num_classes: int) -> int:
    """Parse the ``top_k`` query value: an integer from 1 to the number of classes."""
    if text is None or text == "":
        return min(default, num_classes)
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequestError(f"top_k={text!r} is not an integer") from None
    if not 1 <= value <= num_classes:
        raise InvalidRequestError(f"top_k must be between 1 and {num_classes}; got {value}")
    return value


def top_predictions(scores: np.ndarray, labels: Sequence[str], top_k: int) -> list[dict[str, Any]]:
    """Return the top_k classes as ``{"index", "label", "score"}``, highest score first."""
    row = np.asarray(scores, dtype=np.float32).reshape(-1)
    return [
        {"index": index, "label": labels[index], "score": round(float(row[index]), 6)}
        for index in top_classes(row, top_k)[0]
    ]


def predict_upload(
    predictor: Predictor,
    decoder: ImageDecoder,
    data: bytes,
    top_k_text: str | None,
    settings: Settings,
    *,
    client: socket.socket | None = None,
) -> dict[str, Any]:
    """Decode, resize, predict and rank one uploaded image; return the JSON body.

    ``client`` is the client's socket when the server gives it: a decode is stopped when
    the client leaves.
    """

    def prepare(spec: ModelInfo) -> np.ndarray:
        parse_top_k(top_k_text, settings.default_top_k, len(spec.labels))  # 400 before a call
        return decoder.prepare(data, spec.input_size, client)[np.newaxis]

    spec, scores = predict_served(predictor, prepare, settings.request_timeout_s)
    top_k = parse_top_k(top_k_text, settings.default_top_k, len(spec.labels))
    return {
        "predictions": top_predictions(scores[0], spec.labels, top_k),
        "model": spec.name,
        "model_version": spec.version,
    }
