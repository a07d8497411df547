"""The hostile-case builders make what their names say (cheap checks, no service)."""

from __future__ import annotations

import cv2
import numpy as np

from onemodel.web.imaging import read_dimensions, sniff_format
from tests.support.fuzzing.mutations import jpeg_segments
from tests.support.hostile import (
    LIE_SIDE,
    _webp_lossless_flat,
    bmp_rle,
    flat_jpeg,
    hidden_frame_jpeg,
    hostile_cases,
    scan_bomb_jpeg,
    tiff,
)


def _decode(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def test_the_hidden_frame_jpeg_lies_to_the_header_check() -> None:
    data = hidden_frame_jpeg(LIE_SIDE, LIE_SIDE)
    assert read_dimensions(data, "jpeg") == (16, 16)
    # libjpeg sees the real frame: at 1/8 scale it is 1250x1250.
    reduced = _decode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    assert reduced is not None and reduced.shape == (LIE_SIDE // 8, LIE_SIDE // 8)
    assert len(data) < 200


def test_the_duplicate_tag_tiff_lies_to_the_header_check() -> None:
    rows = bytes(0)
    data = tiff(LIE_SIDE, LIE_SIDE, rows, extra=((256, 4, 1, 16), (257, 4, 1, 16)))
    assert read_dimensions(data, "tiff") == (16, 16)  # the reader keeps the last tag


def test_flat_images_have_the_size_they_claim() -> None:
    for data in (flat_jpeg(320, 200), flat_jpeg(320, 200, 3), _webp_lossless_flat(320, 200)):
        image = _decode(data)
        assert image is not None and image.shape == (200, 320, 3), sniff_format(data)
    image = _decode(bmp_rle(320, 200, b"\x00\x01"))
    assert image is not None and image.shape == (200, 320, 3)
    assert len(_webp_lossless_flat(7000, 7000)) < 64


def test_the_scan_bomb_has_its_scans() -> None:
    data = scan_bomb_jpeg(64, 64, 300)
    assert sum(1 for _, marker, _ in jpeg_segments(data) if marker == 0xDA) == 301
    assert _decode(data) is not None  # libjpeg accepts it: every scan is decoded


def test_the_suite_is_large_and_names_are_unique() -> None:
    cases = hostile_cases()
    assert len(cases) >= 100
    assert len({case.name for case in cases}) == len(cases)
    assert all(case.raw is not None or case.path for case in cases)
