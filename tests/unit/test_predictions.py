"""Ranking, top_k parsing, labels and preprocessing (pure functions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onemodel.errors import ConfigError, InvalidRequestError
from onemodel.labels import imagenet_labels, load_labels
from onemodel.predictions import parse_top_k, top_predictions
from onemodel.preprocessing import preprocess


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


def test_imagenet_labels_are_bundled() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench"
    assert labels[967] == "espresso"
    assert load_labels(None, 1000) == labels


def test_generated_and_file_labels(tmp_path: Path) -> None:
    assert load_labels(None, 3) == ["class_0", "class_1", "class_2"]
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n\n")
    assert load_labels(str(path), 2) == ["cat", "dog"]
    with pytest.raises(ConfigError, match="2 names but the model has 3"):
        load_labels(str(path), 3)


def test_preprocess_modes() -> None:
    pixel = np.array([[[[255, 0, 10]]]], np.uint8)  # RGB
    caffe = preprocess(pixel, "caffe")[0, 0, 0]
    np.testing.assert_allclose(caffe, [10 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-6)  # BGR
    np.testing.assert_allclose(preprocess(pixel, "tf")[0, 0, 0], [1.0, -1.0, 10 / 127.5 - 1])
    torch = preprocess(pixel, "torch")[0, 0, 0]
    np.testing.assert_allclose(torch[0], (1.0 - 0.485) / 0.229, rtol=1e-6)
    np.testing.assert_allclose(preprocess(pixel, "none")[0, 0, 0], [255, 0, 10])
    assert preprocess(pixel, "none").dtype == np.float32
    with pytest.raises(ValueError):
        preprocess(pixel, "bogus")
