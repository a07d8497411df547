"""int8 with real Keras, OpenVINO and NNCF on real photos: measured, gated, cached."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onemodel.errors import ModelLoadError
from onemodel.settings import Settings
from tests.conftest import TINY_CLASSES, TINY_SIZE
from tests.support.make_model import save_model
from tests.support.photos import photo_crops, write_photo_dir
from tests.support.processes import PYTHON, ROOT, base_env

pytestmark = pytest.mark.slow
pytest.importorskip("openvino")
pytest.importorskip("nncf")

from onemodel.model_server.loading import load_for_serving  # noqa: E402
from onemodel.model_server.prepare import prepare  # noqa: E402
from onemodel.model_server.quantization import (  # noqa: E402
    ACCURACY_AWARE,
    POST_TRAINING,
    NNCFQuantizer,
)

PHOTOS = 60  # 48 calibrate, 12 are held out


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_dir(tmp_path_factory.mktemp("calibration"), PHOTOS, size=96)


@pytest.fixture(scope="module")
def fragile_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny net with class scores far closer together than int8 can resolve."""
    path = tmp_path_factory.mktemp("models") / "fragile.keras"
    # In this process: converting it imports TensorFlow here anyway (saves a TF start).
    save_model(str(path), TINY_SIZE, TINY_CLASSES, seed=7, fragile=True)
    return path


@pytest.fixture(scope="module")
def fragile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared: the first test converts the fragile model, the next quantizes the cached IR."""
    return tmp_path_factory.mktemp("fragile-cache")


class _Forbidden:
    """A quantizer that must not be used: a warm start needs no calibration."""

    def version(self) -> str:
        return NNCFQuantizer().version()

    def quantize(self, model: Any, calibration: Sequence[np.ndarray]) -> Any:
        raise AssertionError("quantized again on a warm start")

    def quantize_with_accuracy_control(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("quantized again on a warm start")


class _PostTrainingOnly(NNCFQuantizer):
    """Real NNCF without the accuracy-aware retry: what post-training alone measures."""

    def quantize_with_accuracy_control(
        self,
        model: Any,
        calibration: Sequence[np.ndarray],
        validation: Sequence[tuple[np.ndarray, int]],
        max_drop: float,
    ) -> Any:
        return self.quantize(model, calibration)


def _int8(model: Path, photos: Path, cache: Path, **changes: Any) -> Settings:
    return Settings(
        model_path=str(model),
        engine="openvino",
        precision="int8",
        calibration_dir=str(photos),
        cache_dir=str(cache),
    ).replace(**changes)


_WARM_START = """
import json, sys
from onemodel.model_server.loading import load_for_serving
from onemodel.settings import Settings
classifier = load_for_serving(Settings(
    model_path=sys.argv[1], precision="int8", calibration_dir=sys.argv[2], cache_dir=sys.argv[3]
))
print(json.dumps({
    "precision": classifier.precision,
    "cache": classifier.cache,
    "frameworks": sorted(
        m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "nncf")
    ),
}))
"""


def test_int8_is_measured_on_held_out_photos_serves_and_starts_warm(
    tiny_model: Path, photos: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    settings = _int8(tiny_model, photos, cache)
    summary = prepare(settings)  # `onemodel prepare --precision int8`: the cold start
    assert "precision int8, engine openvino" in summary
    assert "of 12 images)" in summary and "against float32 on held-out images" in summary

    warm = load_for_serving(settings, quantizer=_Forbidden())
    assert (warm.engine.name, warm.precision, warm.cache) == ("openvino", "int8", "hit")
    assert warm.agreement is not None and warm.agreement.images == 12
    assert warm.agreement.top1 >= settings.min_agreement  # it serves, so it passed
    assert 0 < warm.agreement.max_abs_diff < 0.1  # quantized: close, not identical
    assert POST_TRAINING in warm.engine_reason
    float32 = load_for_serving(settings.replace(precision="float32"))
    assert float32.cache == "hit"  # the conversion int8 started from
    images = np.stack(photo_crops(8, size=64, seed=5))
    scores, reference = warm.predict(images), float32.predict(images)
    assert scores.shape == (8, 10)
    assert np.abs(scores - reference).max() > 0  # really another model
    assert (scores.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.75
    metadata = json.loads(
        next(
            path
            for path in (cache / "openvino").glob("*/metadata.json")
            if '"int8"' in path.read_text()
        ).read_text()
    )
    assert metadata["agreement"]["images"] == 12
    assert "48 calibration images" in metadata["quantization_summary"]

    completed = subprocess.run(
        [PYTHON, "-c", _WARM_START, str(tiny_model), str(photos), str(cache)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=base_env(),
        timeout=300,
    )
    started = json.loads(completed.stdout.strip().splitlines()[-1])
    assert started == {"precision": "int8", "cache": "hit", "frameworks": []}


def test_the_gate_refuses_what_post_training_quantization_cannot_keep(
    fragile_model: Path, photos: Path, fragile_cache: Path
) -> None:
    settings = _int8(fragile_model, photos, fragile_cache, min_agreement=1.0)
    with pytest.raises(ModelLoadError) as refused:
        load_for_serving(settings, quantizer=_PostTrainingOnly())
    message = refused.value.message
    measured = re.search(r"class of only ([\d.]+)% of 12 held-out images, below", message)
    assert measured is not None, message
    assert float(measured.group(1)) < 100.0  # at least one held-out photo changed class
    assert "MODEL_MIN_AGREEMENT=1 (post-training quantization: top-1 agreement" in message


def test_accuracy_aware_quantization_keeps_what_post_training_lost(
    fragile_model: Path, photos: Path, fragile_cache: Path
) -> None:
    settings = _int8(fragile_model, photos, fragile_cache, min_agreement=1.0)
    classifier = load_for_serving(settings)
    assert (classifier.precision, classifier.cache) == ("int8", "miss")
    assert ACCURACY_AWARE in classifier.engine_reason
    assert classifier.agreement is not None
    assert (classifier.agreement.images, classifier.agreement.top1) == (12, 1.0)
