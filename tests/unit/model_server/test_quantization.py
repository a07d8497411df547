"""The int8 gate with stand-ins for NNCF and OpenVINO: post-training, accuracy-aware, refusal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from onemodel.boundary.contract import Agreement
from onemodel.errors import ModelLoadError
from onemodel.model_server.accuracy_control import QuantizationTimeoutError
from onemodel.model_server.calibration import CalibrationSet
from onemodel.model_server.quantization import ACCURACY_AWARE, POST_TRAINING, quantize_gated
from onemodel.model_server.verification import quantization_accepted


@pytest.mark.parametrize(
    ("top1", "images", "bar", "accepted"),
    [
        (1.0, 10, 1.0, True),
        (0.99, 100, 0.99, True),
        (98 / 99, 99, 0.99, False),
        (0.9, 10, 0.91, False),
        (0.0, 10, 0.0, True),
        (1.0, 0, 0.0, False),  # nothing measured is never enough
    ],
)
def test_the_gate_decision(top1: float, images: int, bar: float, accepted: bool) -> None:
    assert quantization_accepted(Agreement(images, top1, 0.0), bar) is accepted


class _Model:
    """Two scores from the mean colour; images at least ``flip_from`` bright swap them."""

    def __init__(self, flip_from: float | None = None) -> None:
        self.flip_from = flip_from

    def predict(self, batch: np.ndarray) -> np.ndarray:
        means = batch.mean(axis=(1, 2, 3))
        scores = np.stack([means, 255.0 - means], axis=1).astype(np.float32)
        if self.flip_from is not None:
            flipped = means >= self.flip_from
            scores[flipped] = scores[flipped][:, ::-1]
        return scores


class _Engine:
    name = "openvino"

    def __init__(self, model: _Model, precision: str) -> None:
        self.precision = precision
        self._model = model

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._model.predict(batch)


class _Quantizer:
    """Returns prepared int8 "models"; records what it was asked."""

    def __init__(self, post_training: _Model, accuracy_aware: _Model) -> None:
        self._results = (post_training, accuracy_aware)
        self.calls: list[tuple[str, int, float]] = []

    def version(self) -> str:
        return "fake"

    def quantize(self, model: Any, calibration: Sequence[np.ndarray]) -> Any:
        self.calls.append(("ptq", len(calibration), -1.0))
        return self._results[0]

    def quantize_with_accuracy_control(
        self,
        model: Any,
        calibration: Sequence[np.ndarray],
        validation: Sequence[tuple[np.ndarray, int]],
        max_drop: float,
    ) -> Any:
        assert len(validation) == len(calibration)  # validated on calibration images only
        self.calls.append(("aaq", len(calibration), max_drop))
        return self._results[1]


def _images() -> CalibrationSet:
    # Held-out grey levels 200, 205, ..., 245: a model flipping from 230 up flips 4 of 10.
    calibration = np.stack([np.full((4, 4, 3), value, np.uint8) for value in range(40)])
    held_out = np.stack([np.full((4, 4, 3), value, np.uint8) for value in range(200, 250, 5)])
    return CalibrationSet(calibration, held_out, skipped=0)


def _gate(quantizer: _Quantizer, bar: float) -> Any:
    return quantize_gated(
        _Model(),
        _images(),
        preprocess_mode="none",
        min_agreement=bar,
        compile_model=_Engine,
        quantizer=quantizer,
    )


def test_post_training_quantization_that_reaches_the_bar_is_served() -> None:
    quantizer = _Quantizer(_Model(flip_from=240), _Model())
    result = _gate(quantizer, bar=0.8)
    assert result.method == POST_TRAINING
    assert (result.agreement.images, result.agreement.top1) == (10, 0.8)
    assert result.engine.precision == "int8"
    assert [call[0] for call in quantizer.calls] == ["ptq"]  # no accuracy control needed


def test_accuracy_aware_quantization_is_tried_below_the_bar() -> None:
    quantizer = _Quantizer(_Model(flip_from=230), _Model(flip_from=245))
    result = _gate(quantizer, bar=0.9)
    assert result.method == ACCURACY_AWARE
    assert result.agreement.top1 == 0.9
    assert quantizer.calls[1] == ("aaq", 40, pytest.approx(0.1))
    assert "post-training quantization: top-1 agreement 60.0% (6 of 10" in result.summary


def test_below_the_bar_after_both_the_model_is_refused_saying_by_how_much() -> None:
    quantizer = _Quantizer(_Model(flip_from=230), _Model(flip_from=240))
    with pytest.raises(ModelLoadError) as refused:
        _gate(quantizer, bar=1.0)
    message = refused.value.message
    assert "only 80.0% of 10 held-out images, below MODEL_MIN_AGREEMENT=1" in message
    assert "post-training quantization: top-1 agreement 60.0% (6 of 10 images)" in message
    assert "accuracy-aware quantization: top-1 agreement 80.0% (8 of 10 images)" in message


def test_an_nncf_failure_is_a_clear_load_error() -> None:
    class Failing(_Quantizer):
        def quantize(self, model: Any, calibration: Sequence[np.ndarray]) -> Any:
            raise RuntimeError("no quantizable operation")

    with pytest.raises(ModelLoadError, match="NNCF post-training quantization failed: Runtime"):
        _gate(Failing(_Model(), _Model()), bar=0.9)


def test_accuracy_control_out_of_time_refuses_with_the_post_training_figure() -> None:
    class OutOfTime(_Quantizer):
        def quantize_with_accuracy_control(
            self,
            model: Any,
            calibration: Sequence[np.ndarray],
            validation: Sequence[tuple[np.ndarray, int]],
            max_drop: float,
        ) -> Any:
            raise QuantizationTimeoutError(
                "accuracy-aware quantization did not finish within "
                "MODEL_QUANTIZATION_TIMEOUT_S=5 s (stopped)"
            )

    with pytest.raises(ModelLoadError) as refused:
        _gate(OutOfTime(_Model(flip_from=230), _Model()), bar=0.9)
    message = refused.value.message
    assert "only 60.0% of 10 held-out images, below MODEL_MIN_AGREEMENT=0.9" in message
    assert "did not finish within MODEL_QUANTIZATION_TIMEOUT_S=5 s" in message
