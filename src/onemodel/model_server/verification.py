"""Verify a converted model against its reference: seeded inputs, and the int8 gate's decision."""

from __future__ import annotations

import numpy as np

from onemodel.boundary.contract import Agreement

VERIFICATION_IMAGES = 4
VERIFICATION_SEED = 11
# The float32 bar: a faithful conversion differs by float rounding only (measured ~1e-8).
MAX_ABS_DIFFERENCE = 1e-4


def verification_images(
    input_size: tuple[int, int], count: int = VERIFICATION_IMAGES, seed: int = VERIFICATION_SEED
) -> np.ndarray:
    """Return ``count`` seeded random RGB uint8 images (count, H, W, 3): the same every run."""
    height, width = input_size
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)


def measure_agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Compare candidate scores with reference scores (both (N, classes))."""
    if reference.shape != candidate.shape:
        raise ValueError(f"score shapes differ: {reference.shape} and {candidate.shape}")
    same_top1 = reference.argmax(axis=1) == candidate.argmax(axis=1)
    difference = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return Agreement(
        images=int(reference.shape[0]),
        top1=float(same_top1.mean()),
        max_abs_diff=float(difference.max()) if difference.size else 0.0,
    )


def conversion_verified(agreement: Agreement) -> bool:
    """Return whether a float32 conversion is faithful: same top-1 everywhere, tiny diff."""
    return agreement.top1 == 1.0 and agreement.max_abs_diff <= MAX_ABS_DIFFERENCE


def quantization_accepted(agreement: Agreement, min_agreement: float) -> bool:
    """Return whether an int8 model may serve: top-1 agreement on held-out images at the bar.

    No images measured is never enough, whatever the bar.
    """
    # A hair of tolerance: 99 of 100 images is 0.99 even if the division rounds below it.
    return agreement.images > 0 and agreement.top1 >= min_agreement - 1e-9


def describe_agreement(agreement: Agreement) -> str:
    """Return an agreement in words, e.g. ``top-1 agreement 97.5% (39 of 40 images)``."""
    kept = round(agreement.top1 * agreement.images)
    return (
        f"top-1 agreement {agreement.top1:.1%} ({kept} of {agreement.images} images), "
        f"max |difference| {agreement.max_abs_diff:.3g}"
    )
