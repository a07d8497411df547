"""Inference engines the model server runs a classifier on: TensorFlow (Keras) or OpenVINO.

Runs in the model server only. An engine takes a preprocessed float32 batch (N, H, W, 3) and
returns float32 scores (N, classes); the classifier and the batcher do not know which one
they hold. ``tensorflow`` wraps a Keras model; ``openvino`` imports OpenVINO (and TensorFlow
only to convert a model).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Engine(Protocol):
    """One loaded model: preprocessed float32 batches in, float32 scores out."""

    @property
    def name(self) -> str:
        """Return the engine's name: ``tensorflow`` or ``openvino``."""
        ...

    @property
    def precision(self) -> str:
        """Return the precision the model computes in (``float32``, ``bfloat16``)."""
        ...

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Return float32 scores (N, classes) for a preprocessed float32 batch (N, H, W, 3)."""
        ...
