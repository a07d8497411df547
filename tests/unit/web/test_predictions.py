"""The prediction use case: ranked answers, top_k parsing, answers named by their version."""

from __future__ import annotations

import numpy as np
import pytest

from onemodel.boundary.contract import ModelInfo
from onemodel.errors import InvalidRequestError, ModelChangedError
from onemodel.settings import Settings
from onemodel.web.image_decoder import InProcessDecoder
from onemodel.web.predictions import parse_top_k, predict_upload, top_predictions
from onemodel.web.served_model import VERSION_ATTEMPTS, predict_served


def test_top_predictions_sorted_with_labels() -> None:
    scores = np.array([0.1, 0.5, 0.05, 0.3, 0.05], np.float32)
    result = top_predictions(scores, ["a", "b", "c", "d", "e"], 3)
    assert [item["index"] for item in result] == [1, 3, 0]
    assert [item["label"] for item in result] == ["b", "d", "a"]
    assert result[0]["score"] == pytest.approx(0.5)


def test_ties_break_by_index() -> None:
    result = top_predictions(np.array([0.2, 0.4, 0.4]), ["a", "b", "c"], 3)
    assert [item["index"] for item in result] == [1, 2, 0]


@pytest.mark.parametrize(("text", "expected"), [(None, 5), ("", 5), ("1", 1), ("10", 10)])
def test_parse_top_k(text: str | None, expected: int) -> None:
    assert parse_top_k(text, 5, 10) == expected


def test_default_top_k_capped_by_classes() -> None:
    assert parse_top_k(None, 5, 3) == 3


@pytest.mark.parametrize("text", ["0", "-1", "11", "abc", "2.5"])
def test_bad_top_k(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="top_k"):
        parse_top_k(text, 5, 10)


class _SwappingPredictor:
    """Serves version 1 (4x4, 2 classes) until its first predict; then version 2 (6x6, 3)."""

    def __init__(self, swaps: int = 1) -> None:
        self.swaps = swaps
        self.served = 1
        self.predicted: list[tuple[str | None, tuple[int, ...]]] = []

    def spec(self) -> ModelInfo:
        size, classes = (4, 2) if self.served == 1 else (6, 3)
        labels = tuple(f"v{self.served}_{index}" for index in range(classes))
        return ModelInfo(
            state="ready",
            name="m",
            version=str(self.served),
            input_size=(size, size),
            labels=labels,
            max_batch_size=4,
        )

    def predict(
        self, images: np.ndarray, timeout_s: float, version: str | None = None
    ) -> np.ndarray:
        self.predicted.append((version, images.shape))
        if self.swaps:
            self.swaps -= 1
            self.served += 1
            raise ModelChangedError()
        classes = len(self.spec().labels)
        return np.arange(classes, dtype=np.float32)[np.newaxis].repeat(images.shape[0], 0)


def test_a_swap_between_spec_and_predict_prepares_again_for_the_new_version() -> None:
    predictor = _SwappingPredictor()
    spec, scores = predict_served(
        predictor, lambda spec: np.zeros((1, *spec.input_size, 3), np.uint8), timeout_s=5
    )
    assert spec.version == "2" and scores.shape == (1, 3)
    assert predictor.predicted == [("1", (1, 4, 4, 3)), ("2", (1, 6, 6, 3))]


def test_an_upload_answer_names_and_labels_the_version_that_computed_it(
    photo_jpeg: bytes,
) -> None:
    decoder = InProcessDecoder(max_pixels=50_000_000)
    body = predict_upload(_SwappingPredictor(), decoder, photo_jpeg, "1", Settings())
    assert body["model"] == "m" and body["model_version"] == "2"
    assert body["predictions"][0]["label"] == "v2_2"


def test_endless_swaps_end_in_a_retryable_error() -> None:
    predictor = _SwappingPredictor(swaps=VERSION_ATTEMPTS)
    with pytest.raises(ModelChangedError) as raised:
        predict_served(predictor, lambda spec: np.zeros((1, 2, 2, 3), np.uint8), timeout_s=5)
    assert raised.value.status == 503 and len(predictor.predicted) == VERSION_ATTEMPTS
