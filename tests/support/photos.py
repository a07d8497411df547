"""A directory of real photos for int8 calibration: seeded crops of scikit-image's photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# The colour photos scikit-image ships inside its wheel (no download).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")


def photo_crops(count: int, size: int = 96, seed: int = 0) -> list[np.ndarray]:
    """Return ``count`` RGB uint8 crops (size x size) of real photos: varied, seeded."""
    import skimage.data  # noqa: PLC0415

    photos = [np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]) for name in PHOTOS]
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 4, min(height, width) + 1))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return crops


def write_photo_dir(directory: Path, count: int, size: int = 96, seed: int = 0) -> Path:
    """Write ``count`` photo crops as JPEG files photo-000.jpg, ... into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, rgb in enumerate(photo_crops(count, size, seed)):
        ok, encoded = cv2.imencode(
            ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        assert ok
        (directory / f"photo-{index:03d}.jpg").write_bytes(encoded.tobytes())
    return directory
