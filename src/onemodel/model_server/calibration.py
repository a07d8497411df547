"""The int8 calibration set: the user's images, read with bounds, split into two parts.

MODEL_CALIBRATION_DIR is operator input, read carefully: only regular files directly in
it (no recursion, no symbolic links), at most ``MAX_CALIBRATION_FILES`` of them in file-
name order, each at most MAX_UPLOAD_BYTES; every image is decoded and resized exactly as an
upload is (``onemodel.web.imaging.prepare_image``, under MAX_IMAGE_PIXELS), and whatever
does not decode is skipped with a log line. Sorted by file name, every 5th readable image
(the 5th, 10th, ...) is held out: it never calibrates, it only measures the int8 model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onemodel.errors import ConfigError, ModelLoadError, OneModelError

logger = logging.getLogger(__name__)

MAX_CALIBRATION_FILES = 500
HOLD_OUT_EVERY = 5
MIN_HELD_OUT_IMAGES = 10
# Bump when the reading or splitting rules change: cached int8 models then miss.
CALIBRATION_RULES = f"rules=1 every={HOLD_OUT_EVERY} max_files={MAX_CALIBRATION_FILES}"
_LOGGED_SKIPS = 10


@dataclass(frozen=True)
class CalibrationFiles:
    """The candidate files of a calibration directory and a hash of their content."""

    directory: Path
    paths: tuple[Path, ...]
    digest: str  # sha256 of the rules, every candidate's name and content, in order


@dataclass(frozen=True)
class CalibrationSet:
    """Decoded RGB uint8 images (N, H, W, 3): the calibration part and the held-out part."""

    calibration: np.ndarray
    held_out: np.ndarray
    skipped: int


def split_indices(count: int, every: int = HOLD_OUT_EVERY) -> tuple[list[int], list[int]]:
    """Return (calibration, held-out) positions of ``count`` images: every ``every``-th held out."""
    held_out = [index for index in range(count) if index % every == every - 1]
    calibration = [index for index in range(count) if index % every != every - 1]
    return calibration, held_out


def list_calibration_files(directory: Path, max_bytes: int) -> CalibrationFiles:
    """Return the regular files of ``directory`` to try, by name, with their content hash.

    Raise ConfigError when the directory cannot be read. Files larger than ``max_bytes``,
    hidden files, links and subdirectories are left out (larger files with a log line).
    """
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except OSError as error:
        raise ConfigError(
            f"MODEL_CALIBRATION_DIR={str(directory)!r} cannot be read: {error.strerror}"
        ) from None
    sha = hashlib.sha256(CALIBRATION_RULES.encode())
    paths: list[Path] = []
    for name in names:
        if len(paths) >= MAX_CALIBRATION_FILES:
            logger.warning(
                "MODEL_CALIBRATION_DIR: reading only the first %d files (by name)",
                MAX_CALIBRATION_FILES,
            )
            break
        if name.startswith("."):
            continue
        path = directory / name
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        if info.st_size > max_bytes:
            logger.warning(
                "MODEL_CALIBRATION_DIR: skipping %s: %d bytes, more than MAX_UPLOAD_BYTES=%d",
                name,
                info.st_size,
                max_bytes,
            )
            continue
        try:
            content = _read_at_most(path, max_bytes)
        except OSError as error:
            logger.warning("MODEL_CALIBRATION_DIR: skipping %s: %s", name, error.strerror)
            continue
        sha.update(f"\n{name}\n{hashlib.sha256(content).hexdigest()}".encode())
        paths.append(path)
    return CalibrationFiles(directory, tuple(paths), sha.hexdigest())


def read_calibration_set(
    files: CalibrationFiles, input_size: tuple[int, int], max_bytes: int, max_pixels: int
) -> CalibrationSet:
    """Decode the files like uploads and split them; raise ModelLoadError if too few decode."""
    # Imported here: OpenCV costs every model server start ~0.07 s and ~16 MB, and only an
    # int8 conversion reads calibration images (a warm start never does).
    from onemodel.web.imaging import prepare_image  # noqa: PLC0415

    images: list[np.ndarray] = []
    skipped = 0
    for path in files.paths:
        try:
            images.append(prepare_image(_read_at_most(path, max_bytes), input_size, max_pixels))
        except Exception as error:  # any file that does not decode is skipped, not fatal
            skipped += 1
            if skipped <= _LOGGED_SKIPS:
                reason = error.message if isinstance(error, OneModelError) else str(error)
                logger.warning("MODEL_CALIBRATION_DIR: skipping %s: %s", path.name, reason)
    if skipped > _LOGGED_SKIPS:
        logger.warning("MODEL_CALIBRATION_DIR: skipped %d files in all", skipped)
    calibration, held_out = split_indices(len(images))
    if len(held_out) < MIN_HELD_OUT_IMAGES:
        raise ModelLoadError(
            f"MODEL_CALIBRATION_DIR={str(files.directory)!r} holds {len(images)} readable "
            f"images ({skipped} files skipped); int8 needs at least "
            f"{MIN_HELD_OUT_IMAGES * HOLD_OUT_EVERY} (every {HOLD_OUT_EVERY}th is held out to "
            f"measure the int8 model, and at least {MIN_HELD_OUT_IMAGES} must be)"
        )
    height, width = input_size
    stacked = np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)
    logger.info(
        "MODEL_CALIBRATION_DIR: %d images calibrate, %d are held out (%d files skipped)",
        len(calibration),
        len(held_out),
        skipped,
    )
    return CalibrationSet(stacked[calibration], stacked[held_out], skipped)


def _read_at_most(path: Path, max_bytes: int) -> bytes:
    # O_NOFOLLOW: a file swapped for a link after the listing is not followed either.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as file:
        content = file.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise OSError(0, f"more than MAX_UPLOAD_BYTES={max_bytes} bytes")
    return content
