"""Turn uploaded bytes into ranked predictions: the use case shared by every HTTP route."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from onemodel.errors import InvalidRequestError
from onemodel.imaging import prepare_image
from onemodel.manager import ModelSpec
from onemodel.settings import Settings


class Predictor(Protocol):
    """The model server as the web tier sees it (a ModelClient, or a fake in tests)."""

    def spec(self) -> ModelSpec: ...

    def predict(self, images: np.ndarray, timeout_s: float) -> np.ndarray: ...

    def info(self) -> dict[str, Any]: ...

    def metrics_text(self) -> bytes: ...


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


def top_predictions(scores: np.ndarray, labels: list[str], top_k: int) -> list[dict[str, Any]]:
    """Return the top_k classes as ``{"index", "label", "score"}``, highest score first."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    top_k = min(top_k, scores.shape[0])
    candidates = np.argpartition(-scores, top_k - 1)[:top_k]
    # Stable order for ties: higher score first, then lower class index.
    ranked = sorted(candidates.tolist(), key=lambda index: (-float(scores[index]), index))
    return [
        {"index": index, "label": labels[index], "score": round(float(scores[index]), 6)}
        for index in ranked
    ]


def predict_upload(
    predictor: Predictor, data: bytes, top_k_text: str | None, settings: Settings
) -> dict[str, Any]:
    """Decode, resize, predict and rank one uploaded image; return the JSON body."""
    spec = predictor.spec()
    top_k = parse_top_k(top_k_text, settings.default_top_k, len(spec.labels))
    image = prepare_image(data, spec.input_size, settings.max_image_pixels)
    scores = predictor.predict(image[np.newaxis], settings.request_timeout_s)
    return {"predictions": top_predictions(scores[0], spec.labels, top_k), "model": spec.name}
