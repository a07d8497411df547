"""Benchmark inputs made locally under bench/.cache: the tiny model and the JPEG uploads."""

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


def ensure_uploads() -> dict[str, Upload]:
    """Write the 224x224 JPEG and the large (4000x3000) JPEG from scikit-image's photos."""
    CACHE.mkdir(parents=True, exist_ok=True)
    small = _write_jpeg(CACHE / "chelsea-224.jpg", _photo("chelsea"), (224, 224))
    large = _write_jpeg(CACHE / "coffee-4000x3000.jpg", _photo("coffee"), LARGE_SIZE)
    return {"224": small, "large": large}


def _photo(name: str) -> np.ndarray:
    import skimage.data  # noqa: PLC0415  (slow import, needed only to build the files)

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


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
