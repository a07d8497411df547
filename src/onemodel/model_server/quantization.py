"""int8: quantize a float32 OpenVINO model with NNCF on calibration images, gated on held-out ones.

Post-training quantization first. When its top-1 agreement with the float32 model on the
held-out images is below MODEL_MIN_AGREEMENT, NNCF's accuracy-aware quantization tries
next: it keeps in float32 the operations that cost agreement, validating on the
calibration images only, so the held-out images stay an honest measurement. If neither
reaches the bar the model is refused, saying by how much.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from onemodel.boundary.contract import Agreement
from onemodel.errors import ModelLoadError
from onemodel.model_server.accuracy_control import (
    QuantizationTimeoutError,
    quantization_parameters,
    run_accuracy_control,
)
from onemodel.model_server.calibration import CalibrationSet
from onemodel.model_server.engines import Engine
from onemodel.model_server.preprocessing import preprocess
from onemodel.model_server.verification import (
    describe_agreement,
    measure_agreement,
    quantization_accepted,
)

logger = logging.getLogger(__name__)

# The most operation groups accuracy-aware quantization returns to float32, one by one
# (each costs a validation pass over the calibration images).
ACCURACY_CONTROL_MAX_ITERATIONS = 8
# Settings.quantization_timeout_s's default (MODEL_QUANTIZATION_TIMEOUT_S).
ACCURACY_CONTROL_TIMEOUT_S = 300.0
_PREDICT_BATCH = 16
POST_TRAINING = "post-training quantization"
ACCURACY_AWARE = "accuracy-aware quantization"


class Quantizer(Protocol):
    """What the gate needs from NNCF (``NNCFQuantizer``; unit tests fake it)."""

    def version(self) -> str: ...

    def quantize(self, model: Any, calibration: Sequence[np.ndarray]) -> Any: ...

    def quantize_with_accuracy_control(
        self,
        model: Any,
        calibration: Sequence[np.ndarray],
        validation: Sequence[tuple[np.ndarray, int]],
        max_drop: float,
    ) -> Any: ...


@dataclass(frozen=True)
class Quantized:
    """An int8 model that passed the gate, compiled, and how it got there."""

    model: Any
    engine: Engine
    agreement: Agreement  # on the held-out images, against float32
    method: str  # POST_TRAINING or ACCURACY_AWARE
    summary: str  # every attempt and its agreement, for the log and the cache metadata


def quantize_gated(
    model: Any,
    images: CalibrationSet,
    *,
    preprocess_mode: str,
    min_agreement: float,
    compile_model: Callable[[Any, str], Engine],
    quantizer: Quantizer,
) -> Quantized:
    """Quantize ``model`` (float32 OpenVINO) to int8; raise ModelLoadError below the bar."""
    calibration = preprocess(images.calibration, preprocess_mode)
    held_out = preprocess(images.held_out, preprocess_mode)
    float32 = compile_model(model, "float32")
    reference = _predict(float32, held_out)
    items = [calibration[index : index + 1] for index in range(len(calibration))]
    attempts: list[str] = []

    def attempt(method: str, build: Callable[[], Any]) -> tuple[Any, Engine, Agreement]:
        started = time.monotonic()
        try:
            quantized = build()
        except ModelLoadError:
            raise
        except Exception as error:  # NNCF raises its own and plain exceptions
            raise ModelLoadError(
                f"MODEL_PRECISION=int8: NNCF {method} failed: {type(error).__name__}: {error}"
            ) from None
        engine = compile_model(quantized, "int8")
        agreement = measure_agreement(reference, _predict(engine, held_out))
        attempts.append(f"{method}: {describe_agreement(agreement)}")
        logger.info(
            "int8 %s in %.1f s on %d calibration images: %s on %d held-out images",
            method,
            time.monotonic() - started,
            len(items),
            describe_agreement(agreement),
            agreement.images,
        )
        return quantized, engine, agreement

    quantized, engine, agreement = attempt(POST_TRAINING, lambda: quantizer.quantize(model, items))
    method = POST_TRAINING
    if not quantization_accepted(agreement, min_agreement):
        expected = _predict(float32, calibration).argmax(axis=1)
        validation = [(item, int(label)) for item, label in zip(items, expected, strict=True)]
        try:
            quantized, engine, agreement = attempt(
                ACCURACY_AWARE,
                lambda: quantizer.quantize_with_accuracy_control(
                    model,
                    items,
                    validation,
                    max_drop=max(0.0, 1.0 - min_agreement),
                ),
            )
            method = ACCURACY_AWARE
        except QuantizationTimeoutError as error:
            # The post-training agreement stands, below the bar: refused just below.
            attempts.append(f"{ACCURACY_AWARE}: {error}")
            logger.warning("int8 %s: %s", ACCURACY_AWARE, error)
    summary = "; ".join(attempts)
    if not quantization_accepted(agreement, min_agreement):
        raise ModelLoadError(
            f"MODEL_PRECISION=int8: the int8 model keeps the float32 top-1 class of only "
            f"{agreement.top1:.1%} of {agreement.images} held-out images, below "
            f"MODEL_MIN_AGREEMENT={min_agreement:g} ({summary}). Add more (and more "
            "varied) images to MODEL_CALIBRATION_DIR, lower MODEL_MIN_AGREEMENT, or serve "
            "float32 or bfloat16"
        )
    return Quantized(quantized, engine, agreement, method, summary)


class NNCFQuantizer:
    """NNCF on OpenVINO models, imported when first used (seconds; only cold int8 starts)."""

    def __init__(
        self,
        max_iterations: int = ACCURACY_CONTROL_MAX_ITERATIONS,
        timeout_s: float = ACCURACY_CONTROL_TIMEOUT_S,
    ) -> None:
        self._max_iterations = max_iterations
        self._timeout_s = timeout_s
        try:
            import nncf  # noqa: PLC0415
        except ImportError:
            raise ModelLoadError(
                "MODEL_PRECISION=int8 needs NNCF (pip install 'onemodel[model]')"
            ) from None
        # NNCF logs every step at INFO and draws progress bars: the gate's own lines suffice.
        logging.getLogger("nncf").setLevel(logging.WARNING)
        self._nncf: Any = nncf

    def version(self) -> str:
        """Return NNCF's version (part of every int8 cache key)."""
        return str(self._nncf.__version__)

    def quantize(self, model: Any, calibration: Sequence[np.ndarray]) -> Any:
        """Return ``model`` quantized by post-training quantization (items: (1, H, W, 3))."""
        nncf = self._nncf
        return nncf.quantize(
            model,
            nncf.Dataset(list(calibration)),
            subset_size=len(calibration),
            advanced_parameters=quantization_parameters(),
        )

    def quantize_with_accuracy_control(
        self,
        model: Any,
        calibration: Sequence[np.ndarray],
        validation: Sequence[tuple[np.ndarray, int]],
        max_drop: float,
    ) -> Any:
        """Return ``model`` quantized by accuracy-aware quantization, in a child process.

        The metric is top-1 agreement with each validation item's expected class (its
        float32 top-1); NNCF returns operation groups to float32 until the drop from the
        float32 model's 1.0 is at most ``max_drop`` or ``max_iterations`` groups are back
        (0: none, the post-training result is kept). The validation items are the
        calibration images with their classes. The child is killed after ``timeout_s``
        (QuantizationTimeoutError): see ``accuracy_control``.
        """
        del calibration  # the same images as the validation items
        return run_accuracy_control(
            model,
            np.concatenate([item for item, _ in validation]),
            np.array([label for _, label in validation], dtype=np.int64),
            max_drop=max_drop,
            max_iterations=self._max_iterations,
            timeout_s=self._timeout_s,
        )


def _predict(engine: Engine, batch: np.ndarray) -> np.ndarray:
    parts = [
        engine.predict(batch[start : start + _PREDICT_BATCH])
        for start in range(0, len(batch), _PREDICT_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
