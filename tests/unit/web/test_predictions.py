"""The prediction use case's pure parts: ranked answers and top_k parsing."""

from __future__ import annotations

import numpy as np
import pytest

from onemodel.errors import InvalidRequestError
from onemodel.web.predictions import parse_top_k, top_predictions


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
