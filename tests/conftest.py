"""Shared fixtures: small saved Keras models, real photos, free ports."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support.processes import PYTHON, ROOT, base_env

TINY_SIZE = 64
TINY_CLASSES = 10


def build_model(
    path: Path,
    size: int = TINY_SIZE,
    classes: int = TINY_CLASSES,
    seed: int = 7,
    fragile: bool = False,
) -> Path:
    """Build and save a small Keras classifier in a subprocess (keeps TF out of pytest)."""
    subprocess.run(
        [
            PYTHON,
            str(ROOT / "tests" / "support" / "make_model.py"),
            str(path),
            "--size",
            str(size),
            "--classes",
            str(classes),
            "--seed",
            str(seed),
            *(["--fragile"] if fragile else []),
        ],
        check=True,
        env=base_env(),
        timeout=300,
    )
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved 64x64, 10-class Keras model."""
    return build_model(tmp_path_factory.mktemp("models") / "tiny.keras")


def _skimage_photo(name: str) -> np.ndarray:
    """Return a real photo shipped with scikit-image, as RGB uint8."""
    import skimage.data  # noqa: PLC0415

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


@pytest.fixture(scope="session")
def photo_rgb() -> np.ndarray:
    """A real colour photo (scikit-image's coffee cup, 400x600)."""
    return _skimage_photo("coffee")


@pytest.fixture(scope="session")
def photo_jpeg(photo_rgb: np.ndarray) -> bytes:
    """The real photo as JPEG bytes."""
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
    )
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="session")
def cat_jpeg() -> bytes:
    """A second real photo (scikit-image's cat, Chelsea) as JPEG bytes."""
    rgb = _skimage_photo("chelsea")
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes()


@pytest.fixture
def artifacts_dir() -> Iterator[Path]:
    """A folder kept after the run for people to look at (screenshots, logs)."""
    path = ROOT / "tests" / "artifacts"
    path.mkdir(exist_ok=True)
    yield path
