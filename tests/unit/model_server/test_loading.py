"""The engine choice with a NumPy stand-in for Keras and OpenVINO: fallback, refusal, cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onemodel.errors import ModelLoadError
from onemodel.model_server import loading
from onemodel.model_server.engines.tensorflow import TensorFlowEngine
from onemodel.model_server.model import Classifier
from onemodel.settings import Settings

SIZE, CLASSES = 8, 3


class _FakeKeras:
    """Scores from the mean colour of each image: a deterministic "model"."""

    def __init__(self, weights: list[list[float]]) -> None:
        self.weights = np.asarray(weights, dtype=np.float32)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        logits = batch.mean(axis=(1, 2)) @ self.weights / 255.0
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class _FakeEngine:
    name = "openvino"

    def __init__(self, model: _FakeKeras, precision: str, offset: float) -> None:
        self.precision = precision
        self._model = model
        self._offset = offset

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._model.predict_on_batch(batch) + np.float32(self._offset)


class _FakeToolkit:
    """Stands in for OpenVINOToolkit: "converts" by copying, can shift scores or fail."""

    def __init__(self, offset: float = 0.0, fail: str = "") -> None:
        self.offset = offset
        self.fail = fail
        self.compiled: list[str] = []

    def version(self) -> str:
        return "fake-1"

    def convert(self, keras_model: Any, input_size: tuple[int, int]) -> Any:
        if self.fail:
            raise RuntimeError(self.fail)
        return _FakeKeras(keras_model.weights.tolist())

    def compile(self, model: Any, precision: str) -> Any:
        self.compiled.append(precision)
        return _FakeEngine(model, precision, self.offset)

    def save(self, model: Any, xml_path: Path) -> None:
        xml_path.write_text(json.dumps(model.weights.tolist()))

    def read(self, xml_path: Path) -> Any:
        return _FakeKeras(json.loads(xml_path.read_text()))


@pytest.fixture
def keras_loads(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Replace the Keras loader; return the list of settings it was called with."""
    calls: list[Settings] = []

    def load(settings: Settings) -> Classifier:
        calls.append(settings)
        weights = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [-1.0, 0.0, 3.0]]
        return Classifier(
            name="fake",
            engine=TensorFlowEngine(_FakeKeras(weights), settings.precision),
            input_size=(SIZE, SIZE),
            num_classes=CLASSES,
            preprocess_mode="none",
            precision=settings.precision,
        )

    monkeypatch.setattr(loading, "load_classifier", load)
    return calls


def _settings(tmp_path: Path, **changes: Any) -> Settings:
    model = tmp_path / "model.keras"
    if not model.exists():
        model.write_bytes(b"model v1")
    return Settings(model_path=str(model), cache_dir=str(tmp_path / "cache")).replace(**changes)


def test_auto_uses_a_verified_conversion(tmp_path: Path, keras_loads: list[Settings]) -> None:
    classifier = loading.load_for_serving(_settings(tmp_path), toolkit=_FakeToolkit())
    assert classifier.engine.name == "openvino"
    assert classifier.agreement is not None
    assert (classifier.agreement.top1, classifier.agreement.max_abs_diff) == (1.0, 0.0)
    assert classifier.cache == "miss"
    assert [settings.precision for settings in keras_loads] == ["float32"]


def test_auto_falls_back_reusing_the_float32_keras_model(
    tmp_path: Path, keras_loads: list[Settings]
) -> None:
    classifier = loading.load_for_serving(_settings(tmp_path), toolkit=_FakeToolkit(offset=0.01))
    assert classifier.engine.name == "tensorflow"
    assert "max |difference| 0.01" in classifier.engine_reason
    assert len(keras_loads) == 1  # not built twice
    assert not (tmp_path / "cache" / "openvino").exists()  # nothing cached


def test_auto_falls_back_in_bfloat16_by_building_the_bfloat16_keras_model(
    tmp_path: Path, keras_loads: list[Settings]
) -> None:
    settings = _settings(tmp_path, precision="bfloat16")
    classifier = loading.load_for_serving(settings, toolkit=_FakeToolkit(fail="no rule for Foo"))
    assert (classifier.engine.name, classifier.precision) == ("tensorflow", "bfloat16")
    assert "no rule for Foo" in classifier.engine_reason
    assert [settings.precision for settings in keras_loads] == ["float32", "bfloat16"]


def test_explicit_openvino_refuses_with_the_measured_difference(
    tmp_path: Path, keras_loads: list[Settings]
) -> None:
    with pytest.raises(ModelLoadError, match=r"MODEL_ENGINE=openvino: .*max \|difference\| 0\.01"):
        loading.load_for_serving(
            _settings(tmp_path, engine="openvino"), toolkit=_FakeToolkit(offset=0.01)
        )


def test_bfloat16_is_verified_in_float32_then_compiled_in_bfloat16(
    tmp_path: Path, keras_loads: list[Settings]
) -> None:
    toolkit = _FakeToolkit()
    classifier = loading.load_for_serving(_settings(tmp_path, precision="bfloat16"), toolkit)
    assert toolkit.compiled == ["float32", "bfloat16"]
    assert (classifier.engine.name, classifier.precision) == ("openvino", "bfloat16")


def test_a_warm_start_builds_no_keras_model_and_a_changed_file_misses(
    tmp_path: Path, keras_loads: list[Settings]
) -> None:
    settings = _settings(tmp_path)
    cold = loading.load_for_serving(settings, toolkit=_FakeToolkit())
    warm = loading.load_for_serving(settings, toolkit=_FakeToolkit())
    assert (cold.cache, warm.cache) == ("miss", "hit")
    assert len(keras_loads) == 1
    assert (warm.name, warm.input_size, warm.num_classes, warm.preprocess_mode) == (
        "fake",
        (SIZE, SIZE),
        CLASSES,
        "none",
    )
    assert warm.agreement == cold.agreement
    images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warm.predict(images), cold.predict(images))

    Path(settings.model_path).write_bytes(b"model v2, retrained")
    changed = loading.load_for_serving(settings, toolkit=_FakeToolkit())
    assert changed.cache == "miss"
    assert len(keras_loads) == 2


def test_a_damaged_cache_entry_is_converted_again(
    tmp_path: Path, keras_loads: list[Settings]
) -> None:
    settings = _settings(tmp_path)
    loading.load_for_serving(settings, toolkit=_FakeToolkit())
    [entry] = (tmp_path / "cache" / "openvino").iterdir()
    (entry / "model.xml").write_text("{damaged")
    again = loading.load_for_serving(settings, toolkit=_FakeToolkit())
    assert (again.engine.name, again.cache) == ("openvino", "miss")
    assert len(keras_loads) == 2


def test_explicit_tensorflow_and_no_cache(tmp_path: Path, keras_loads: list[Settings]) -> None:
    toolkit = _FakeToolkit()
    tensorflow = loading.load_for_serving(_settings(tmp_path, engine="tensorflow"), toolkit)
    assert tensorflow.engine.name == "tensorflow" and toolkit.compiled == []
    uncached = loading.load_for_serving(_settings(tmp_path, cache_dir=None), toolkit)
    assert (uncached.engine.name, uncached.cache) == ("openvino", "")
    assert not (tmp_path / "cache").exists()


def test_auto_keeps_tensorflow_when_openvino_is_missing_or_a_cuda_gpu_is_present(
    tmp_path: Path, keras_loads: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    missing = loading.load_for_serving(_settings(tmp_path))
    assert missing.engine.name == "tensorflow"
    assert "OpenVINO is not installed" in missing.engine_reason
    with pytest.raises(ModelLoadError, match="MODEL_ENGINE=openvino: OpenVINO is not installed"):
        loading.load_for_serving(_settings(tmp_path, engine="openvino"))
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(loading, "_cuda_gpu_present", lambda: True)
    on_gpu = loading.load_for_serving(_settings(tmp_path))
    assert "a CUDA GPU is present" in on_gpu.engine_reason


class _FakeQuantizer:
    """Stands in for NNCF: "quantizes" by copying the weights, optionally disturbed."""

    def __init__(self, disturb: float = 0.0) -> None:
        self.disturb = disturb
        self.calls = 0

    def version(self) -> str:
        return "nncf-fake"

    def quantize(self, model: Any, calibration: Any) -> Any:
        self.calls += 1
        weights = np.asarray(model.weights)
        return _FakeKeras((weights + self.disturb * np.eye(CLASSES)[::-1]).tolist())

    def quantize_with_accuracy_control(
        self, model: Any, calibration: Any, validation: Any, max_drop: float
    ) -> Any:
        return self.quantize(model, calibration)


def _photos(directory: Path, count: int = 50) -> Path:
    import cv2  # noqa: PLC0415

    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        ok, data = cv2.imencode(".png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        assert ok
        (directory / f"{index:03d}.png").write_bytes(data.tobytes())
    return directory


def _int8(tmp_path: Path, **changes: Any) -> Settings:
    photos = _photos(tmp_path / "photos")
    return _settings(tmp_path, precision="int8", calibration_dir=str(photos), **changes)


def test_int8_is_cached_with_its_agreement_and_a_warm_start_does_not_quantize(
    tmp_path: Path, keras_loads: list[Settings]
) -> None:
    settings = _int8(tmp_path)
    quantizer = _FakeQuantizer()
    cold = loading.load_for_serving(settings, _FakeToolkit(), quantizer)
    assert (cold.engine.name, cold.precision, cold.cache) == ("openvino", "int8", "miss")
    assert cold.agreement is not None and cold.agreement.images == 10  # 50 photos, 1 in 5
    assert "post-training quantization" in cold.engine_reason
    assert [keras.precision for keras in keras_loads] == ["float32"]
    warm = loading.load_for_serving(settings, _FakeToolkit(), quantizer)
    assert (warm.precision, warm.cache, warm.agreement) == ("int8", "hit", cold.agreement)
    assert quantizer.calls == 1 and len(keras_loads) == 1
    float32 = loading.load_for_serving(settings.replace(precision="float32"), _FakeToolkit())
    assert float32.cache == "hit"  # int8's cold start left the float32 conversion too

    first = Path(settings.calibration_dir or "") / "000.png"
    first.write_bytes((Path(settings.calibration_dir or "") / "001.png").read_bytes())
    recalibrated = loading.load_for_serving(settings, _FakeToolkit(), quantizer)
    assert (recalibrated.cache, quantizer.calls) == ("miss", 2)
    assert len(keras_loads) == 1  # quantized from the cached float32 model: no Keras
    stricter = loading.load_for_serving(
        settings.replace(min_agreement=1.0), _FakeToolkit(), quantizer
    )
    assert (stricter.cache, quantizer.calls) == ("miss", 3)  # the bar is part of the key


def test_int8_below_the_bar_refuses_even_under_auto(
    tmp_path: Path, keras_loads: list[Settings]
) -> None:
    settings = _int8(tmp_path, min_agreement=1.0)
    with pytest.raises(ModelLoadError, match=r"below MODEL_MIN_AGREEMENT=1 \("):
        loading.load_for_serving(settings, _FakeToolkit(), _FakeQuantizer(disturb=50.0))
    entries = list((tmp_path / "cache" / "openvino").iterdir())
    assert len(entries) == 1  # the float32 conversion only: a refused model is not cached


def test_auto_int8_falls_back_to_tensorflow_float32_when_openvino_cannot_serve(
    tmp_path: Path, keras_loads: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _int8(tmp_path)
    classifier = loading.load_for_serving(settings, _FakeToolkit(fail="boom"), _FakeQuantizer())
    assert (classifier.engine.name, classifier.precision) == ("tensorflow", "float32")
    assert "TensorFlow has no int8: serving float32" in classifier.engine_reason
    assert len(keras_loads) == 1  # the float32 reference is reused
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    missing = loading.load_for_serving(settings)
    assert (missing.engine.name, missing.precision) == ("tensorflow", "float32")
    assert "int8 needs it" in missing.engine_reason
    with pytest.raises(ModelLoadError, match="MODEL_ENGINE=openvino: OpenVINO is not installed"):
        loading.load_for_serving(settings.replace(engine="openvino"))
