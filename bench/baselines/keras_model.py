"""Load the benchmark's Keras model (random VGG16 or a saved file) at a precision, for baselines."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from onemodel.model_server.preprocessing import preprocess

PRECISIONS = ("float32", "bfloat16")


@dataclass
class LoadedModel:
    """A Keras classifier and what a caller needs to feed it uint8 RGB images."""

    keras_model: Any
    input_size: tuple[int, int]
    num_classes: int
    preprocess_mode: str

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Return the float32 model input for RGB uint8 images (N, H, W, 3)."""
        return preprocess(images, self.preprocess_mode)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return float32 scores (N, classes) for RGB uint8 images, one model call."""
        outputs = self.keras_model.predict_on_batch(self.prepare(images))
        return np.asarray(outputs, dtype=np.float32)

    def warm_up(self) -> None:
        """Run the model once so the first request does not pay for tracing."""
        height, width = self.input_size
        self.predict(np.zeros((1, height, width, 3), dtype=np.uint8))


def load_model(model_path: str, precision: str) -> LoadedModel:
    """Build VGG16 with random weights (model_path 'vgg16') or load a .keras file."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415  (deferred: only model processes import TensorFlow)

    policy = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    keras.mixed_precision.set_global_policy(policy)
    if model_path == "vgg16":
        model = keras.applications.VGG16(weights=None)
        mode = "caffe"
    else:
        model = keras.models.load_model(model_path, compile=False)
        if precision == "bfloat16":
            model = _with_policy(keras, model, policy)
        mode = "none"
    _, height, width, _ = model.input_shape
    return LoadedModel(model, (int(height), int(width)), int(model.output_shape[-1]), mode)


def _with_policy(keras: Any, model: Any, policy: str) -> Any:
    """Clone a saved model under a dtype policy, keeping its last layer in float32."""
    last = model.layers[-1].name

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        if "dtype" in config and layer.name != last:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone
