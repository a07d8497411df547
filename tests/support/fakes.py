"""A fake model server for web-tier tests: deterministic scores, injectable errors."""

from __future__ import annotations

import numpy as np

from onemodel.boundary.contract import ModelInfo

HEIGHT, WIDTH, CLASSES = 16, 24, 11
MAX_BATCH_SIZE = 16


def expected_scores(images: np.ndarray) -> np.ndarray:
    """Score class i by how close an image's mean red value is to 25 * i (rows sum to 1)."""
    red = images[..., 0].reshape(images.shape[0], -1).mean(axis=1)
    scores = np.stack([1.0 / (1.0 + abs(red - 25 * i)) for i in range(CLASSES)], axis=1)
    return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)


class FakePredictor:
    """Stands in for ModelClient; set ``error`` to make every call raise it."""

    def __init__(self, max_batch_size: int = MAX_BATCH_SIZE) -> None:
        self.max_batch_size = max_batch_size
        self.error: Exception | None = None
        self.ready = True
        self.seen: list[np.ndarray] = []

    def spec(self) -> ModelInfo:
        self._raise()
        return ModelInfo(
            state="ready",
            name="fake",
            version="1",
            input_size=(HEIGHT, WIDTH),
            labels=tuple(f"label_{i}" for i in range(CLASSES)),
            max_batch_size=self.max_batch_size,
        )

    def predict(
        self, images: np.ndarray, timeout_s: float, version: str | None = None
    ) -> np.ndarray:
        self._raise()
        self.seen.append(images)
        return expected_scores(images)

    def info(self) -> ModelInfo:
        self._raise()
        if not self.ready:
            return ModelInfo(state="loading", reason="the model is loading")
        return self.spec()

    def metrics_text(self) -> bytes:
        self._raise()
        return b"# TYPE onemodel_batch_size histogram\nonemodel_batch_size_count 3.0\n"

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
