"""Benchmark inputs made locally under bench/.cache: the models, the JPEG uploads, int8's images."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
TINY_MODEL = CACHE / "tiny.keras"
CALIBRATION_DIR = CACHE / "calibration"
# int8 calibrates on at least 50 images and holds every 5th out (MODEL_CALIBRATION_DIR).
CALIBRATION_IMAGES = 100
_CALIBRATION_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "camera")
LARGE_SIZE = (4000, 3000)  # width, height
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Upload:
    """One image file the load generator posts."""

    name: str
    path: Path
    width: int
    height: int

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def ensure_tiny_model(python: str = sys.executable) -> Path:
    """Build the tiny model once (in a subprocess: this process never imports TensorFlow)."""
    if not TINY_MODEL.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        script = BENCH / "make_tiny_model.py"
        subprocess.run([python, str(script), str(TINY_MODEL)], check=True, timeout=300)
    return TINY_MODEL


def ensure_application_model(architecture: str, python: str = sys.executable) -> Path:
    """Build a keras.applications model with random weights once (bench/.cache/<name>.keras)."""
    path = CACHE / f"{architecture}.keras"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        script = BENCH / "make_application_model.py"
        subprocess.run([python, str(script), architecture, str(path)], check=True, timeout=900)
    return path


def ensure_calibration_images(count: int = CALIBRATION_IMAGES) -> Path:
    """Write int8's calibration JPEGs: seeded crops and flips of scikit-image's photos."""
    done = CALIBRATION_DIR / ".complete"
    if done.is_file():
        return CALIBRATION_DIR
    CALIBRATION_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    photos = [_photo(name) for name in _CALIBRATION_PHOTOS]
    for index in range(count):
        rgb = photos[index % len(photos)]
        height, width = rgb.shape[:2]
        side = int(min(height, width) * rng.uniform(0.5, 1.0))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = rgb[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        _write_jpeg(CALIBRATION_DIR / f"calibration-{index:03d}.jpg", crop, (224, 224))
    done.touch()
    return CALIBRATION_DIR


def ensure_uploads() -> dict[str, Upload]:
    """Write the 224x224 JPEG and the large (4000x3000) JPEG from scikit-image's photos."""
    CACHE.mkdir(parents=True, exist_ok=True)
    small = _write_jpeg(CACHE / "chelsea-224.jpg", _photo("chelsea"), (224, 224))
    large = _write_jpeg(CACHE / "coffee-4000x3000.jpg", _photo("coffee"), LARGE_SIZE)
    return {"224": small, "large": large}


def _photo(name: str) -> np.ndarray:
    import skimage.data  # noqa: PLC0415  (slow import, needed only to build the files)

    image = getattr(skimage.data, name)()
    if image.ndim == 2:  # grey photos (camera) as RGB
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _write_jpeg(path: Path, rgb: np.ndarray, size: tuple[int, int]) -> Upload:
    width, height = size
    if not path.is_file():
        shrinking = rgb.shape[0] * rgb.shape[1] > width * height
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
        resized = cv2.resize(rgb, (width, height), interpolation=interpolation)
        ok, encoded = cv2.imencode(
            ".jpg",
            cv2.cvtColor(resized, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
        )
        if not ok:
            raise RuntimeError(f"could not encode {path}")
        path.write_bytes(encoded.tobytes())
    return Upload(name=path.stem, path=path, width=width, height=height)
