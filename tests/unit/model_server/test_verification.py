"""Verification of converted models: seeded inputs, agreement, the float32 bar."""

from __future__ import annotations

import numpy as np
import pytest

from onemodel.boundary.contract import Agreement
from onemodel.model_server.verification import (
    MAX_ABS_DIFFERENCE,
    conversion_verified,
    measure_agreement,
    verification_images,
)


def test_verification_images_are_the_same_every_time() -> None:
    first = verification_images((32, 48))
    assert first.dtype == np.uint8
    assert first.shape == (4, 32, 48, 3)
    np.testing.assert_array_equal(first, verification_images((32, 48)))
    assert not np.array_equal(first, verification_images((32, 48), seed=1))


def test_identical_scores_agree_fully() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    agreement = measure_agreement(scores, scores.copy())
    assert agreement == Agreement(images=2, top1=1.0, max_abs_diff=0.0)
    assert conversion_verified(agreement)


def test_a_flipped_top1_fails_even_when_the_difference_is_tiny() -> None:
    reference = np.array([[0.50001, 0.49999], [0.9, 0.1]], dtype=np.float32)
    candidate = np.array([[0.49999, 0.50001], [0.9, 0.1]], dtype=np.float32)
    agreement = measure_agreement(reference, candidate)
    assert agreement.top1 == 0.5
    assert agreement.max_abs_diff == pytest.approx(2e-5, rel=0.05)
    assert not conversion_verified(agreement)


def test_a_difference_above_the_bar_fails_with_the_same_top1() -> None:
    reference = np.array([[0.2, 0.8]], dtype=np.float32)
    candidate = reference + np.array([[3 * MAX_ABS_DIFFERENCE, 0.0]], dtype=np.float32)
    agreement = measure_agreement(reference, candidate)
    assert agreement.top1 == 1.0
    assert agreement.max_abs_diff > MAX_ABS_DIFFERENCE
    assert not conversion_verified(agreement)


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        measure_agreement(np.zeros((2, 3)), np.zeros((2, 4)))
