"""Load and warm the model once ahead of time (``onemodel prepare``), filling its caches.

An image build runs it so a container starts without downloads (the VGG16 ImageNet weights
land in the Keras cache; converted engine files in theirs), also on read-only filesystems.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from onemodel.errors import ModelLoadError
from onemodel.model_server.verification import describe_agreement
from onemodel.settings import Settings

logger = logging.getLogger(__name__)


def prepare(settings: Settings) -> str:
    """Load the model the settings name, run one warm-up batch; return a one-line summary."""
    # Imported here: TensorFlow costs seconds and memory, and only this path needs it.
    from onemodel.model_server.loading import load_for_serving  # noqa: PLC0415

    started = time.monotonic()
    # The engine's own choice, as the model server makes it: a verified OpenVINO
    # conversion (and with MODEL_PRECISION=int8 the quantized model that passed its gate)
    # lands in the model cache (MODEL_CACHE_DIR), so serving starts warm.
    classifier = load_for_serving(settings)
    height, width = classifier.input_size
    scores = classifier.predict(np.zeros((1, height, width, 3), dtype=np.uint8))
    if scores.shape != (1, classifier.num_classes):
        raise ModelLoadError(f"the warm-up returned scores of shape {scores.shape}")
    agreement = classifier.agreement
    measured = (
        f", {describe_agreement(agreement)} against float32 on held-out images"
        if classifier.precision == "int8" and agreement is not None
        else ""
    )
    return (
        f"prepared {classifier.name}: input {height}x{width}, {classifier.num_classes} classes, "
        f"precision {classifier.precision}, engine {classifier.engine.name}"
        f"{' (' + classifier.engine_reason + ')' if classifier.engine_reason else ''}"
        f"{measured}, in {time.monotonic() - started:.1f} s"
    )
