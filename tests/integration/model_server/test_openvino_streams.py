"""The OpenVINO engine split across streams: the same scores, in order, for every batch size."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from onemodel.model_server.engines.openvino import OpenVINOEngine  # noqa: E402

_CLASSES = 5


def _model() -> Any:
    """A small dynamic-batch classifier built in OpenVINO itself (no TensorFlow needed)."""
    opset = ov.opset13
    images = opset.parameter([-1, 16, 16, 3], ov.Type.f32, name="images")
    pooled = opset.reduce_mean(images, opset.constant(np.array([1, 2], dtype=np.int64)), False)
    weights = np.random.default_rng(3).normal(size=(3, _CLASSES)).astype(np.float32)
    logits = opset.matmul(pooled, opset.constant(weights), False, False)
    return ov.Model([opset.softmax(logits, 1)], [images], "pooled")


@pytest.fixture(scope="module")
def engines() -> tuple[OpenVINOEngine, OpenVINOEngine]:
    model = _model()
    return OpenVINOEngine(model, "float32", streams=1), OpenVINOEngine(model, "float32", streams=2)


def test_two_streams_compile_for_throughput(
    engines: tuple[OpenVINOEngine, OpenVINOEngine],
) -> None:
    single, split = engines
    assert (single.streams, split.streams) == (1, 2)
    assert str(split._compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert str(single._compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"


@pytest.mark.parametrize("size", [1, 2, 3, 8, 9])
def test_a_split_batch_gives_the_same_scores_in_order(
    engines: tuple[OpenVINOEngine, OpenVINOEngine], size: int
) -> None:
    single, split = engines
    # Every image its own brightness: a part answered out of order would show.
    batch = np.stack([np.full((16, 16, 3), i * 0.25, np.float32) for i in range(size)])
    batch += np.random.default_rng(size).uniform(0, 0.2, batch.shape).astype(np.float32)
    expected = single.predict(batch)
    scores = split.predict(batch)
    assert scores.shape == (size, _CLASSES) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    # The rows differ, so a part answered out of order would fail the comparison.
    assert len({tuple(np.round(row, 4)) for row in expected}) == size


def test_results_survive_the_next_call(engines: tuple[OpenVINOEngine, OpenVINOEngine]) -> None:
    _, split = engines
    first_batch = np.ones((4, 16, 16, 3), np.float32)
    first = split.predict(first_batch)
    kept = first.copy()
    split.predict(np.full((4, 16, 16, 3), 200.0, np.float32))
    np.testing.assert_array_equal(first, kept)  # copied, not the requests' reused buffers


def test_streams_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        OpenVINOEngine(_model(), "float32", streams=0)


def test_streams_run_a_static_one_image_model_and_leave_the_callers_dynamic() -> None:
    model = _model()
    engine = OpenVINOEngine(model, "float32", streams=2)
    assert list(engine._compiled.input(0).get_partial_shape().to_shape()) == [1, 16, 16, 3]
    assert model.input(0).get_partial_shape()[0].is_dynamic
    single = OpenVINOEngine(model, "float32", streams=1)
    assert single._compiled.input(0).get_partial_shape()[0].is_dynamic
