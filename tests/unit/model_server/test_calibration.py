"""The int8 calibration set: bounded reading, skipped files, the deterministic split."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from onemodel.errors import ConfigError, ModelLoadError
from onemodel.model_server import calibration
from onemodel.model_server.calibration import (
    MIN_HELD_OUT_IMAGES,
    list_calibration_files,
    read_calibration_set,
    split_indices,
)

SIZE = (8, 8)


def _png(value: int, size: int = 12) -> bytes:
    ok, data = cv2.imencode(".png", np.full((size, size, 3), value, np.uint8))
    assert ok
    return data.tobytes()


def _write_images(directory: Path, count: int) -> Path:
    directory.mkdir(exist_ok=True)
    for index in range(count):
        (directory / f"img-{index:03d}.png").write_bytes(_png(index))
    return directory


def test_every_fifth_image_is_held_out() -> None:
    assert split_indices(10) == ([0, 1, 2, 3, 5, 6, 7, 8], [4, 9])
    assert split_indices(4) == ([0, 1, 2, 3], [])
    calibration_part, held_out = split_indices(503)
    assert len(held_out) == 100 and len(calibration_part) == 403
    assert not set(calibration_part) & set(held_out)


def test_images_decode_like_uploads_and_split_by_file_name(tmp_path: Path) -> None:
    directory = _write_images(tmp_path / "images", 50)
    files = list_calibration_files(directory, max_bytes=10_000)
    images = read_calibration_set(files, SIZE, max_bytes=10_000, max_pixels=10_000)
    assert images.calibration.shape == (40, 8, 8, 3) and images.held_out.shape == (10, 8, 8, 3)
    assert images.calibration.dtype == np.uint8
    # Held out: the 5th, 10th, ... file by name (their grey value is their index).
    assert images.held_out[:, 0, 0, 0].tolist() == list(range(4, 50, 5))
    assert images.skipped == 0


def test_what_is_not_a_small_image_is_skipped_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = _write_images(tmp_path / "images", 50)
    (directory / "notes.txt").write_text("not an image")
    (directory / "huge.png").write_bytes(b"\x89PNG" + bytes(6_000))
    (directory / "bomb.png").write_bytes(_png(2, size=120))  # 14400 pixels > 10000
    (directory / ".hidden.png").write_bytes(_png(3))
    (directory / "sub").mkdir()
    (directory / "sub" / "deep.png").write_bytes(_png(4))
    os.symlink(directory / "img-000.png", directory / "link.png")
    with caplog.at_level(logging.WARNING):
        files = list_calibration_files(directory, max_bytes=5_000)
        images = read_calibration_set(files, SIZE, max_bytes=5_000, max_pixels=10_000)
    assert {path.name for path in files.paths} == {
        *(f"img-{index:03d}.png" for index in range(50)),
        "notes.txt",
        "bomb.png",
    }
    assert images.skipped == 2
    assert len(images.calibration) + len(images.held_out) == 50
    assert "skipping huge.png" in caplog.text and "more than MAX_UPLOAD_BYTES" in caplog.text
    assert "skipping notes.txt" in caplog.text and "skipping bomb.png" in caplog.text


def test_at_most_the_first_files_by_name_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration, "MAX_CALIBRATION_FILES", 7)
    files = list_calibration_files(_write_images(tmp_path / "images", 9), max_bytes=10_000)
    assert [path.name for path in files.paths] == [f"img-{index:03d}.png" for index in range(7)]


def test_too_few_readable_images_refuse_saying_how_many_are_needed(tmp_path: Path) -> None:
    count = MIN_HELD_OUT_IMAGES * 5 - 1
    files = list_calibration_files(_write_images(tmp_path / "images", count), max_bytes=10_000)
    with pytest.raises(ModelLoadError, match=f"holds {count} readable images.*at least 50"):
        read_calibration_set(files, SIZE, max_bytes=10_000, max_pixels=10_000)


def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MODEL_CALIBRATION_DIR=.*cannot be read"):
        list_calibration_files(tmp_path / "absent", max_bytes=10_000)


def test_the_digest_follows_names_and_content(tmp_path: Path) -> None:
    directory = _write_images(tmp_path / "images", 3)
    first = list_calibration_files(directory, max_bytes=10_000).digest
    assert list_calibration_files(directory, max_bytes=10_000).digest == first
    (directory / "img-001.png").write_bytes(_png(200))
    changed = list_calibration_files(directory, max_bytes=10_000).digest
    assert changed != first
    (directory / "img-001.png").rename(directory / "img-009.png")  # the split moves
    assert list_calibration_files(directory, max_bytes=10_000).digest not in (first, changed)
