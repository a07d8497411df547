"""Top-k ranking: the one implementation behind /predict, /v2 classification and the bench."""

from __future__ import annotations

import numpy as np

from onemodel.web.ranking import top_classes
from onemodel.web.tensors import classify


def test_rows_are_ranked_highest_first_with_ties_to_the_lower_index() -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [0.9, 0.0, 0.05, 0.05]], np.float32)
    assert top_classes(scores, 3) == [[1, 2, 3], [0, 2, 3]]


def test_a_single_row_and_a_count_over_the_classes() -> None:
    assert top_classes(np.array([0.2, 0.7, 0.1]), 10) == [[1, 0, 2]]
    assert top_classes(np.array([0.2, 0.7, 0.1]), 0) == [[]]


def test_v2_classification_uses_the_same_order() -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.2]], np.float32)
    ranked = [element.decode().split(":")[1] for element in classify(scores, ["a", "b"], 3)[0]]
    assert ranked == ["1", "2", "3"]
