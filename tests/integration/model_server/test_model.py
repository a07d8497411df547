"""The model module with real Keras: loading, precision, batching equivalence, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onemodel.errors import ConfigError, ModelLoadError
from onemodel.settings import Settings
from tests.conftest import TINY_CLASSES, TINY_SIZE

pytestmark = pytest.mark.slow
keras = pytest.importorskip("keras")

from onemodel.model_server.model import cpu_bfloat16_flags, load_classifier  # noqa: E402


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (count, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8
    )


def test_float32_is_exactly_what_keras_gives(tiny_model: Path) -> None:
    classifier = load_classifier(Settings(model_path=str(tiny_model)))
    assert classifier.input_size == (TINY_SIZE, TINY_SIZE)
    assert classifier.num_classes == TINY_CLASSES
    assert classifier.preprocess_mode == "none"
    reference = keras.models.load_model(tiny_model, compile=False)
    batch = _images(4)
    expected = np.asarray(reference.predict_on_batch(batch.astype(np.float32)))
    np.testing.assert_array_equal(classifier.predict(batch), expected)
    assert all(
        layer.dtype_policy.compute_dtype == "float32" for layer in classifier.keras_model.layers
    )


def test_batched_predictions_equal_unbatched(tiny_model: Path) -> None:
    classifier = load_classifier(Settings(model_path=str(tiny_model)))
    batch = _images(8, seed=1)
    together = classifier.predict(batch)
    alone = np.concatenate([classifier.predict(batch[index : index + 1]) for index in range(8)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-7)


def test_bfloat16_model_file_computes_in_bfloat16_with_float32_outputs(tiny_model: Path) -> None:
    full = load_classifier(Settings(model_path=str(tiny_model)))
    half = load_classifier(Settings(model_path=str(tiny_model), precision="bfloat16"))
    layers = half.keras_model.layers
    computing = [layer for layer in layers[1:-1] if layer.weights]
    assert computing, "the tiny model has weighted layers"
    assert all(layer.dtype_policy.compute_dtype == "bfloat16" for layer in computing)
    assert all(layer.dtype_policy.variable_dtype == "float32" for layer in computing)
    assert layers[-1].dtype_policy.compute_dtype == "float32"
    batch = _images(16, seed=2)
    low, high = half.predict(batch), full.predict(batch)
    assert low.dtype == np.float32
    assert not np.array_equal(low, high)  # really computed differently
    assert np.abs(low - high).max() < 0.05
    np.testing.assert_allclose(low.sum(axis=1), 1.0, rtol=1e-5)


def test_vgg16_bfloat16_layers() -> None:
    classifier = load_classifier(
        Settings(model_path="vgg16", weights="random", precision="bfloat16")
    )
    by_name = {layer.name: layer for layer in classifier.keras_model.layers}
    assert by_name["block5_conv3"].dtype_policy.compute_dtype == "bfloat16"
    assert by_name["fc1"].dtype_policy.compute_dtype == "bfloat16"
    assert by_name["predictions"].dtype_policy.compute_dtype == "bfloat16"  # logits
    last = classifier.keras_model.layers[-1]
    assert last.name == "softmax" and last.dtype_policy.compute_dtype == "float32"
    scores = classifier.predict(np.zeros((1, 224, 224, 3), np.uint8))
    assert scores.shape == (1, 1000) and scores.dtype == np.float32


def test_model_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"neither 'vgg16' nor a \.keras or \.h5"):
        load_classifier(Settings(model_path=str(tmp_path / "model.onnx")))
    with pytest.raises(ConfigError, match="no such file"):
        load_classifier(Settings(model_path=str(tmp_path / "missing.keras")))
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match="could not be loaded as a Keras model"):
        load_classifier(Settings(model_path=str(broken)))
    with pytest.raises(ConfigError, match="MODEL_WEIGHTS"):
        load_classifier(Settings(model_path="vgg16", weights=str(tmp_path / "none.h5")))


def test_a_model_that_is_not_an_image_classifier_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((12,))
    path = tmp_path / "tabular.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs)).save(path)
    with pytest.raises(ConfigError, match="fixed \\(batch, height, width, 3\\) input"):
        load_classifier(Settings(model_path=str(path)))


def test_cpu_bfloat16_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile amx_bf16\n"
    )
    assert cpu_bfloat16_flags(str(cpuinfo)) == ["amx_bf16", "amx_tile", "avx512_bf16"]
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2\n")
    assert cpu_bfloat16_flags(str(cpuinfo)) == []
    assert cpu_bfloat16_flags(str(tmp_path / "missing")) == []


def test_bfloat16_sequential_model_file(tmp_path: Path) -> None:
    path = tmp_path / "sequential.keras"
    keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    ).save(path)
    classifier = load_classifier(Settings(model_path=str(path), precision="bfloat16"))
    layers = classifier.keras_model.layers
    assert layers[0].dtype_policy.compute_dtype == "bfloat16"
    assert layers[-1].dtype_policy.compute_dtype == "float32"
    scores = classifier.predict(np.zeros((2, 16, 16, 3), np.uint8))
    assert scores.shape == (2, 3) and scores.dtype == np.float32
