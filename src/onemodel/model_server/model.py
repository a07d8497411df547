"""Load the Keras classifier: the TensorFlow engine and the reference for conversions."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onemodel.boundary.contract import Agreement
from onemodel.errors import ConfigError, ModelLoadError
from onemodel.model_server.engines import Engine
from onemodel.model_server.engines.tensorflow import TensorFlowEngine
from onemodel.model_server.preprocessing import preprocess
from onemodel.settings import Settings

logger = logging.getLogger(__name__)

_MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
_VGG16_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"


@dataclass
class Classifier:
    """A loaded image classifier, on whichever engine, and what callers need to know about it."""

    name: str
    engine: Engine
    input_size: tuple[int, int]
    num_classes: int
    preprocess_mode: str
    precision: str
    # Against the Keras float32 model, measured when the model was converted (None: Keras).
    agreement: Agreement | None = None
    engine_reason: str = ""  # why this engine (auto) or what it computes in, for /readyz
    cache: str = ""  # "hit" or "miss" for a converted model; "" when no cache was used

    @property
    def keras_model(self) -> Any:
        """Return the Keras model (TensorFlow engine only)."""
        if not isinstance(self.engine, TensorFlowEngine):
            raise AttributeError(f"the {self.engine.name} engine holds no Keras model")
        return self.engine.keras_model

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return float32 class scores (N, classes) for RGB uint8 images (N, H, W, 3)."""
        return self.engine.predict(preprocess(images, self.preprocess_mode))


def load_classifier(settings: Settings) -> Classifier:
    """Build or load the model the settings name; raise ModelLoadError/ConfigError clearly."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415  (deferred: importing TensorFlow costs ~0.6 GB)

    keras.mixed_precision.set_global_policy("float32")
    if settings.model_path == "vgg16":
        model = _build_vgg16(keras, settings.weights, settings.precision)
        name = "vgg16"
    else:
        model = _load_model_file(keras, settings.model_path)
        name = Path(settings.model_path).stem
        if settings.precision == "bfloat16":
            model = rebuild_with_policy(keras, model, "mixed_bfloat16")
    input_size, num_classes = _describe(model)
    return Classifier(
        name=name,
        engine=TensorFlowEngine(model, settings.precision),
        input_size=input_size,
        num_classes=num_classes,
        preprocess_mode=settings.preprocess_mode,
        precision=settings.precision,
    )


def cpu_bfloat16_flags(cpuinfo_path: str = "/proc/cpuinfo") -> list[str]:
    """Return the CPU's bfloat16 matrix flags (amx_bf16, amx_tile, avx512_bf16) that it has."""
    try:
        text = Path(cpuinfo_path).read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return sorted(flags & {"amx_bf16", "amx_tile", "avx512_bf16"})


def warn_if_random_weights(model_path: str, weights: str) -> None:
    """Say loudly that VGG16 with random weights predicts nothing (built or from a cache)."""
    if model_path == "vgg16" and weights == "random":
        logger.warning(
            "MODEL_WEIGHTS=random: VGG16 is randomly initialised and its predictions are "
            "MEANINGLESS. Use it only for demos, tests and benchmarks."
        )


def _build_vgg16(keras: Any, weights: str, precision: str) -> Any:
    if weights == "random":
        warn_if_random_weights("vgg16", weights)
        return _vgg16(keras, precision, weights=None)
    if weights == "imagenet":
        cached = cached_imagenet_weights()
        if cached is not None:
            # Used directly: Keras would ignore a cache on a read-only filesystem and download.
            logger.info("loading VGG16 ImageNet weights from %s", cached)
            return _vgg16(keras, precision, weights=cached)
        logger.info("downloading the VGG16 ImageNet weights once (528 MB) into the Keras cache")
        try:
            return _vgg16(keras, precision, weights="imagenet")
        except Exception as error:  # Keras raises plain Exception for a failed download
            raise ModelLoadError(
                "could not download the VGG16 ImageNet weights "
                f"({type(error).__name__}: {error}). Without network access use "
                "MODEL_WEIGHTS=random (meaningless predictions, for demos and tests), "
                "MODEL_WEIGHTS=/path/to/vgg16_weights_tf_dim_ordering_tf_kernels.h5 (a "
                "downloaded copy), or MODEL_PATH=/path/to/model.keras (your own model)."
            ) from None
    if not Path(weights).is_file():
        raise ConfigError(
            f"MODEL_WEIGHTS={weights!r} is not 'imagenet', 'random' or an existing weights file"
        )
    try:
        return _vgg16(keras, precision, weights=weights)
    except (ValueError, OSError) as error:
        raise ModelLoadError(f"MODEL_WEIGHTS={weights!r} does not fit VGG16: {error}") from None


def _vgg16(keras: Any, precision: str, weights: str | None) -> Any:
    """Build VGG16; in bfloat16, directly under the mixed policy with a float32 softmax.

    Built this way rather than rebuilt from a float32 copy: the copy would stay resident
    (measured: +870 MB).
    """
    if precision != "bfloat16":
        return keras.applications.VGG16(weights=weights)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        base = keras.applications.VGG16(weights=weights, classifier_activation=None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    outputs = keras.layers.Activation("softmax", dtype="float32", name="softmax")(base.output)
    return keras.Model(base.input, outputs, name="vgg16")


def cached_imagenet_weights() -> str | None:
    """Return a VGG16 ImageNet weights file already in a Keras cache (e.g. baked in an image)."""
    homes = [os.environ.get("KERAS_HOME"), os.path.expanduser("~/.keras"), "/tmp/.keras"]
    for home in homes:
        if home and (Path(home) / "models" / _VGG16_WEIGHTS_FILE).is_file():
            return str(Path(home) / "models" / _VGG16_WEIGHTS_FILE)
    return None


def _load_model_file(keras: Any, path: str) -> Any:
    if not path.endswith(_MODEL_FILE_SUFFIXES):
        raise ConfigError(f"MODEL_PATH={path!r} is neither 'vgg16' nor a .keras or .h5 model file")
    if not Path(path).is_file():
        raise ConfigError(f"MODEL_PATH={path!r}: no such file")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file
        raise ModelLoadError(
            f"MODEL_PATH={path!r} could not be loaded as a Keras model: "
            f"{type(error).__name__}: {error}"
        ) from None
    return model


def rebuild_with_policy(keras: Any, model: Any, policy: str) -> Any:
    """Rebuild a float32 model so its layers compute under a dtype policy; copy the weights.

    A loaded model keeps the policy it was saved with, so setting the global policy is not
    enough. The model is rebuilt from its config (not cloned: a clone kept the float32
    original resident, +870 MB for VGG16). Input layers and the last layer stay float32: the
    softmax and the outputs are computed in full precision, as Keras's mixed-precision
    guide recommends.
    """
    try:
        config = model.get_config()
        _set_policy(config, policy, keep=model.layers[-1].name)
        clone = model.__class__.from_config(config)
    except Exception as error:  # subclassed models cannot be rebuilt from their config
        raise ModelLoadError(
            "MODEL_PRECISION=bfloat16 needs a functional or Sequential model that Keras can "
            f"rebuild from its config ({type(error).__name__}: {error})"
        ) from None
    clone.set_weights(model.get_weights())
    return clone


def _set_policy(config: dict[str, Any], policy: str, keep: str | None) -> None:
    """Set the dtype policy of every layer in a model config, nested models included."""
    for layer in config.get("layers", []):
        inner = layer.get("config", {})
        if "layers" in inner:
            _set_policy(inner, policy, keep=None)
        elif layer.get("class_name") != "InputLayer" and inner.get("name") != keep:
            if "dtype" in inner:
                inner["dtype"] = policy


def _describe(model: Any) -> tuple[tuple[int, int], int]:
    input_shape = tuple(model.input_shape)
    if len(input_shape) != 4 or input_shape[3] != 3 or None in input_shape[1:3]:
        raise ConfigError(
            f"the model's input shape is {input_shape}; an image classifier with a fixed "
            "(batch, height, width, 3) input is needed"
        )
    output_shape = tuple(model.output_shape)
    if len(output_shape) != 2 or output_shape[1] is None:
        raise ConfigError(f"the model's output shape is {output_shape}; (batch, classes) is needed")
    return (int(input_shape[1]), int(input_shape[2])), int(output_shape[1])
