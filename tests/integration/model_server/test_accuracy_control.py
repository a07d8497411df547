"""Accuracy-aware quantization runs in a child process that is killed at its deadline."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

ov = pytest.importorskip("openvino")

from onemodel.model_server.accuracy_control import (  # noqa: E402
    QuantizationTimeoutError,
    run_accuracy_control,
)


def _model() -> Any:
    opset = ov.opset13
    images = opset.parameter([-1, 8, 8, 3], ov.Type.f32, name="images")
    pooled = opset.reduce_mean(images, opset.constant(np.array([1, 2], dtype=np.int64)), False)
    weights = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    return ov.Model([opset.matmul(pooled, opset.constant(weights), False, False)], [images])


def _job_directories() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("onemodel-accuracy-control-*")}


def test_a_run_past_its_deadline_is_killed_and_refused() -> None:
    before = _job_directories()
    children_before = {child.pid for child in psutil.Process().children(recursive=True)}
    calibration = np.random.default_rng(1).uniform(0, 255, (6, 8, 8, 3)).astype(np.float32)
    with pytest.raises(QuantizationTimeoutError, match=r"MODEL_QUANTIZATION_TIMEOUT_S=0\.2 s"):
        run_accuracy_control(
            _model(),
            calibration,
            np.zeros(6, np.int64),
            max_drop=0.0,
            max_iterations=8,
            timeout_s=0.2,  # the child is still importing NNCF
        )
    children_after = {child.pid for child in psutil.Process().children(recursive=True)}
    assert children_after <= children_before  # killed and reaped, its helpers too
    assert _job_directories() <= before  # its job directory removed
