"""The TensorFlow engine: a Keras model run with ``predict_on_batch`` (the reference)."""

from __future__ import annotations

from typing import Any

import numpy as np


class TensorFlowEngine:
    """Run a Keras model; satisfies ``engines.Engine``."""

    name = "tensorflow"

    def __init__(self, keras_model: Any, precision: str) -> None:
        self.keras_model = keras_model
        self.precision = precision

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return float32 scores (N, classes) for a preprocessed float32 batch."""
        return np.asarray(self.keras_model.predict_on_batch(batch), dtype=np.float32)
