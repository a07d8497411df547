"""NNCF's accuracy-aware quantization in a process of its own, so that it has a deadline.

Accuracy-aware quantization compiles and validates the model once per group of quantized
operations it ranks; on a model with many layers that runs for a very long time (a
random-weight EfficientNetB0 ran over 14 minutes on 2 cores without finishing), and NNCF
cannot be interrupted from another thread. So the model server runs it here, in
``python -m onemodel.model_server.accuracy_control DIR``, and kills it at
MODEL_QUANTIZATION_TIMEOUT_S.

DIR holds ``model.xml``/``.bin`` (the float32 model), ``calibration.npy`` (N, H, W, 3
float32, preprocessed), ``labels.npy`` (each image's float32 top-1 class) and
``job.json`` (``max_drop``, ``max_iterations``); the child writes ``quantized.xml``/``.bin``
or ``error.txt``. It exits when its parent goes away.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onemodel.errors import ModelLoadError

logger = logging.getLogger(__name__)

_MODEL = "model.xml"
_RESULT = "quantized.xml"
_ERROR = "error.txt"
_PARENT_POLL_S = 1.0


class QuantizationTimeoutError(ModelLoadError):
    """Accuracy-aware quantization did not finish within MODEL_QUANTIZATION_TIMEOUT_S."""

    code = "quantization_timeout"
    default_message = "accuracy-aware quantization did not finish in time"


def run_accuracy_control(
    model: Any,
    calibration: np.ndarray,
    labels: np.ndarray,
    *,
    max_drop: float,
    max_iterations: int,
    timeout_s: float,
) -> Any:
    """Return ``model`` quantized accuracy-aware by a child process; raise on failure or timeout.

    ``calibration`` is (N, H, W, 3) float32, ``labels`` the N expected classes.
    """
    import openvino as ov  # noqa: PLC0415  (the model server's, only on a cold int8 start)

    with tempfile.TemporaryDirectory(prefix="onemodel-accuracy-control-") as name:
        work = Path(name)
        ov.save_model(model, str(work / _MODEL), compress_to_fp16=False)
        np.save(work / "calibration.npy", np.ascontiguousarray(calibration, np.float32))
        np.save(work / "labels.npy", np.asarray(labels, np.int64))
        job = {"max_drop": max_drop, "max_iterations": max_iterations}
        (work / "job.json").write_text(json.dumps(job))
        child = subprocess.Popen(
            [sys.executable, "-m", __name__, str(work)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # NNCF's progress bars
            start_new_session=True,  # its own group: a kill takes NNCF's helpers too
        )
        try:
            code = child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            raise QuantizationTimeoutError(
                f"accuracy-aware quantization did not finish within "
                f"MODEL_QUANTIZATION_TIMEOUT_S={timeout_s:g} s (stopped)"
            ) from None
        except BaseException:
            _kill_group(child)
            raise
        if code != 0 or not (work / _RESULT).exists():
            error = work / _ERROR
            detail = error.read_text().strip() if error.exists() else f"exit code {code}"
            raise RuntimeError(detail)
        # Read into memory: the directory goes away when this returns.
        quantized = ov.Core().read_model(str(work / _RESULT))
        return quantized.clone()


def quantization_parameters() -> Any:
    """Return NNCF's advanced parameters for every int8 quantization (both methods)."""
    from nncf.quantization.advanced_parameters import (  # noqa: PLC0415
        AdvancedQuantizationParameters,
        QuantizationParameters,
    )

    # Activations per tensor: NNCF quantizes a depthwise convolution's input per
    # channel and moves that quantizer above the NHWC/NCHW Transpose the TensorFlow
    # frontend leaves around every convolution, onto the wrong axis; OpenVINO's CPU
    # plugin then refuses to compile the model (EfficientNetB0: "FakeQuantize ...
    # doesn't support non per-tensor quantization for axis: 2"). Weights stay per channel.
    return AdvancedQuantizationParameters(
        activations_quantization_params=QuantizationParameters(per_channel=False)
    )


def accuracy_control_here(
    nncf: Any,
    model: Any,
    calibration: Sequence[np.ndarray],
    validation: Sequence[tuple[np.ndarray, int]],
    *,
    max_drop: float,
    max_iterations: int,
) -> Any:
    """Run NNCF's accuracy-aware quantization in this process (the child's part)."""
    from nncf.quantization.advanced_parameters import (  # noqa: PLC0415
        AdvancedAccuracyRestorerParameters,
    )

    def validate(compiled: Any, data: Any) -> tuple[float, list[float]]:
        kept = [float(np.argmax(compiled(item)[0]) == label) for item, label in data]
        return (sum(kept) / len(kept) if kept else 0.0), kept

    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(list(calibration)),
        # Raw items (input, class) reach ``validate``; NNCF's own inference gets inputs.
        nncf.Dataset(list(validation), lambda item: item[0]),
        validate,
        max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calibration),
        advanced_quantization_parameters=quantization_parameters(),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=max_iterations
        ),
    )


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def _exit_with_parent() -> None:
    """Exit as soon as the process that started this one is gone (orphans reparent)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_S)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Run one job directory (see the module docstring); exit 0 when the result is written."""
    args = sys.argv[1:] if argv is None else argv
    work = Path(args[0])
    _exit_with_parent()
    logging.getLogger("nncf").setLevel(logging.WARNING)
    try:
        import nncf  # noqa: PLC0415
        import openvino as ov  # noqa: PLC0415

        job = json.loads((work / "job.json").read_text())
        calibration = np.load(work / "calibration.npy")
        labels = np.load(work / "labels.npy")
        items = [calibration[index : index + 1] for index in range(len(calibration))]
        validation = [(item, int(label)) for item, label in zip(items, labels, strict=True)]
        model = ov.Core().read_model(str(work / _MODEL))
        quantized = accuracy_control_here(
            nncf,
            model,
            items,
            validation,
            max_drop=float(job["max_drop"]),
            max_iterations=int(job["max_iterations"]),
        )
        ov.save_model(quantized, str(work / _RESULT), compress_to_fp16=False)
    except Exception as error:  # reported to the parent, which raises it
        (work / _ERROR).write_text(f"{type(error).__name__}: {error}")
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
