"""Top-k ranking of class scores: the one implementation every answer format uses."""

from __future__ import annotations

import numpy as np


def top_classes(scores: np.ndarray, count: int) -> list[list[int]]:
    """Return, per row of (N, classes) scores, the indices of the top ``count`` classes.

    Highest score first; ties go to the lower class index, so answers are repeatable.
    """
    rows = np.atleast_2d(np.asarray(scores, dtype=np.float32))
    count = max(0, min(count, rows.shape[1]))
    # A stable sort of the negated scores keeps lower indices first among ties.
    order = np.argsort(-rows, axis=1, kind="stable")[:, :count]
    return [[int(index) for index in row] for row in order]
