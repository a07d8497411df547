"""The engines with real Keras and OpenVINO: exact conversion, fallback, cache, warm start."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onemodel.errors import ModelLoadError
from onemodel.model_server.preprocessing import preprocess
from onemodel.model_server.verification import MAX_ABS_DIFFERENCE, verification_images
from onemodel.settings import Settings
from tests.conftest import TINY_SIZE, build_model
from tests.support.processes import PYTHON, ROOT, base_env

pytestmark = pytest.mark.slow
keras = pytest.importorskip("keras")
pytest.importorskip("openvino")

import tensorflow as tf  # noqa: E402

from onemodel.model_server.engines.openvino import (  # noqa: E402
    ConversionError,
    OpenVINOEngine,
    OpenVINOToolkit,
)
from onemodel.model_server.loading import load_for_serving  # noqa: E402


@keras.saving.register_keras_serializable(package="onemodel_tests")
class NumpySort(keras.layers.Layer):  # type: ignore[misc]
    """A custom layer running NumPy inside the graph: OpenVINO has no rule for PyFunc."""

    def call(self, inputs: Any) -> Any:
        outputs = tf.numpy_function(lambda a: np.sort(a, axis=-1), [inputs], tf.float32)
        outputs.set_shape(inputs.shape)
        return outputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


class _Perturbed:
    """A real OpenVINO toolkit whose compiled models add ``offset`` to every score."""

    def __init__(self, offset: float) -> None:
        self._real = OpenVINOToolkit()
        self._offset = offset

    def version(self) -> str:
        return self._real.version()

    def convert(self, keras_model: Any, input_size: tuple[int, int]) -> Any:
        return self._real.convert(keras_model, input_size)

    def compile(self, model: Any, precision: str) -> Any:
        engine = self._real.compile(model, precision)
        offset = self._offset

        class Shifted:
            name = "openvino"

            def __init__(self) -> None:
                self.precision = precision

            def predict(self, batch: np.ndarray) -> np.ndarray:
                return engine.predict(batch) + np.float32(offset)

        return Shifted()

    def save(self, model: Any, xml_path: Path) -> None:
        self._real.save(model, xml_path)

    def read(self, xml_path: Path) -> Any:
        return self._real.read(xml_path)


def _functional(size: int = 24) -> Any:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _sequential(size: int = 24) -> Any:
    keras.utils.set_random_seed(4)
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )


@pytest.mark.parametrize("build", [_functional, _sequential], ids=["functional", "sequential"])
def test_conversion_is_exact_at_every_batch_size(build: Any) -> None:
    model = build()
    toolkit = OpenVINOToolkit()
    engine = toolkit.compile(toolkit.convert(model, (24, 24)), "float32")
    assert engine.inference_precision == "f32"  # the explicit hint, not the CPU's default
    for count in (1, 5, 2):  # one compiled model, dynamic batch
        batch = verification_images((24, 24), count=count, seed=count).astype(np.float32)
        expected = np.asarray(model.predict_on_batch(batch))
        scores = engine.predict(batch)
        assert scores.shape == expected.shape
        assert np.abs(scores - expected).max() <= MAX_ABS_DIFFERENCE
        np.testing.assert_array_equal(scores.argmax(axis=1), expected.argmax(axis=1))


def test_an_unconvertible_layer_is_a_conversion_error() -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(NumpySort()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(ConversionError, match="PyFunc"):
        OpenVINOToolkit().convert(model, (8, 8))


def _custom_layer_model(path: Path) -> Path:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(NumpySort()(inputs))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    return path


def test_auto_falls_back_to_tensorflow_when_the_model_does_not_convert(tmp_path: Path) -> None:
    path = _custom_layer_model(tmp_path / "custom.keras")
    classifier = load_for_serving(Settings(model_path=str(path), cache_dir=str(tmp_path / "c")))
    assert classifier.engine.name == "tensorflow"
    assert "OpenVINO cannot convert the model" in classifier.engine_reason
    assert classifier.agreement is None
    assert classifier.predict(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2, 3)
    assert not (tmp_path / "c" / "openvino").exists() or not any(
        (tmp_path / "c" / "openvino").iterdir()
    )


def test_explicit_openvino_refuses_a_model_that_does_not_convert(tmp_path: Path) -> None:
    path = _custom_layer_model(tmp_path / "custom.keras")
    with pytest.raises(ModelLoadError, match="MODEL_ENGINE=openvino: OpenVINO cannot convert"):
        load_for_serving(Settings(model_path=str(path), engine="openvino"))


def test_auto_falls_back_when_the_conversion_does_not_verify(tiny_model: Path) -> None:
    settings = Settings(model_path=str(tiny_model))
    classifier = load_for_serving(settings, toolkit=_Perturbed(1e-3))
    assert classifier.engine.name == "tensorflow"
    assert "does not match Keras in float32" in classifier.engine_reason
    assert "max |difference| 0.001" in classifier.engine_reason
    # Just within the bar, the same toolkit is accepted.
    accepted = load_for_serving(settings, toolkit=_Perturbed(MAX_ABS_DIFFERENCE / 2))
    assert accepted.engine.name == "openvino"
    assert accepted.agreement is not None
    assert accepted.agreement.max_abs_diff == pytest.approx(MAX_ABS_DIFFERENCE / 2, rel=0.01)


def test_explicit_openvino_refuses_to_start_saying_by_how_much(tiny_model: Path) -> None:
    settings = Settings(model_path=str(tiny_model), engine="openvino")
    with pytest.raises(ModelLoadError, match=r"max \|difference\| 0\.001 \(allowed"):
        load_for_serving(settings, toolkit=_Perturbed(1e-3))


def test_explicit_tensorflow_never_converts(tiny_model: Path) -> None:
    classifier = load_for_serving(
        Settings(model_path=str(tiny_model), engine="tensorflow"), toolkit=_Perturbed(1.0)
    )
    assert classifier.engine.name == "tensorflow"
    assert classifier.engine_reason == "MODEL_ENGINE=tensorflow"
    assert classifier.agreement is None


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(path for path in (cache_dir / "openvino").iterdir() if path.is_dir())


def test_cache_miss_then_hit_then_invalidated_by_a_changed_model_file(
    tiny_model: Path, tmp_path: Path
) -> None:
    path = shutil.copy(tiny_model, tmp_path / "model.keras")
    cache_dir = tmp_path / "cache"
    settings = Settings(model_path=str(path), engine="openvino", cache_dir=str(cache_dir))
    images = verification_images((TINY_SIZE, TINY_SIZE), count=3, seed=5)
    reference = np.asarray(
        keras.models.load_model(path, compile=False).predict_on_batch(preprocess(images, "none"))
    )

    cold = load_for_serving(settings)
    assert (cold.engine.name, cold.cache, cold.precision) == ("openvino", "miss", "float32")
    assert cold.agreement is not None and cold.agreement.top1 == 1.0
    assert cold.agreement.max_abs_diff <= MAX_ABS_DIFFERENCE
    [entry] = _entries(cache_dir)

    warm = load_for_serving(settings)
    assert warm.cache == "hit"
    assert (warm.name, warm.input_size, warm.num_classes) == (
        cold.name,
        cold.input_size,
        cold.num_classes,
    )
    assert warm.agreement == cold.agreement
    np.testing.assert_array_equal(warm.predict(images), cold.predict(images))
    assert np.abs(warm.predict(images) - reference).max() <= MAX_ABS_DIFFERENCE

    other_precision = load_for_serving(settings.replace(precision="bfloat16"))
    assert other_precision.cache == "miss"  # precision is part of the key

    build_model(Path(path), seed=8)  # same path, new content
    changed = load_for_serving(settings)
    assert changed.cache == "miss"
    assert not np.allclose(changed.predict(images), cold.predict(images))
    assert entry not in _entries(cache_dir)  # the superseded entry is gone
    assert len(_entries(cache_dir)) == 2  # the new float32 one and the bfloat16 one


def test_bfloat16_on_openvino_reports_its_agreement(tiny_model: Path) -> None:
    classifier = load_for_serving(
        Settings(model_path=str(tiny_model), engine="openvino", precision="bfloat16")
    )
    assert (classifier.engine.name, classifier.precision) == ("openvino", "bfloat16")
    assert isinstance(classifier.engine, OpenVINOEngine)
    assert classifier.agreement is not None and classifier.agreement.images == 4
    if classifier.engine.inference_precision != "bf16":
        assert "no bfloat16 units" in classifier.engine_reason


_WARM_START = """
import json, sys
from onemodel.model_server.loading import load_for_serving
from onemodel.settings import Settings
classifier = load_for_serving(Settings(model_path=sys.argv[1], cache_dir=sys.argv[2]))
print(json.dumps({
    "engine": classifier.engine.name,
    "cache": classifier.cache,
    "tensorflow": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")),
}))
"""


def test_a_warm_start_does_not_import_tensorflow(tiny_model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"

    def start() -> dict[str, Any]:
        completed = subprocess.run(
            [PYTHON, "-c", _WARM_START, str(tiny_model), str(cache_dir)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env=base_env(),
            timeout=300,
        )
        result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        return result

    cold = start()
    assert cold["cache"] == "miss" and cold["tensorflow"]  # the conversion needed Keras
    warm = start()
    assert warm == {"engine": "openvino", "cache": "hit", "tensorflow": []}


def test_vgg16_random_weights_convert_exactly() -> None:
    classifier = load_for_serving(Settings(model_path="vgg16", weights="random", engine="openvino"))
    assert (classifier.name, classifier.engine.name) == ("vgg16", "openvino")
    assert classifier.agreement is not None
    assert classifier.agreement.top1 == 1.0
    assert classifier.agreement.max_abs_diff <= MAX_ABS_DIFFERENCE
    assert classifier.predict(np.zeros((3, 224, 224, 3), np.uint8)).shape == (3, 1000)
