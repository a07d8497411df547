"""Preprocessing modes of the model inputs."""

from __future__ import annotations

import numpy as np
import pytest

from onemodel.model_server.preprocessing import preprocess


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
