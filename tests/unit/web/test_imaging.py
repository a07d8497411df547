"""Imaging: formats, colour order, orientation, bit depth, alpha, limits, resizing."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from onemodel.errors import InvalidImageError, TooManyPixelsError, UnsupportedMediaTypeError
from onemodel.web.imaging import (
    decode_image,
    prepare_image,
    read_dimensions,
    resize_image,
    sniff_format,
)

BIG = 10**9


def _halves(height: int = 20, width: int = 40) -> np.ndarray:
    """RGB image: left half pure red, right half pure blue."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:, : width // 2] = (255, 0, 0)
    rgb[:, width // 2 :] = (0, 0, 255)
    return rgb


def _pil_bytes(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["PNG", "BMP", "TIFF", "WEBP", "GIF", "JPEG"])
def test_every_format_decodes_to_rgb(image_format: str) -> None:
    options: dict[str, object] = {"lossless": True} if image_format == "WEBP" else {}
    if image_format == "JPEG":
        options = {"quality": 100, "subsampling": 0}
    data = _pil_bytes(Image.fromarray(_halves()), image_format, **options)
    assert sniff_format(data) == ("jpeg" if image_format == "JPEG" else image_format.lower())
    assert read_dimensions(data, sniff_format(data)) == (40, 20)
    rgb = decode_image(data, BIG)
    assert rgb.shape == (20, 40, 3)
    assert rgb.dtype == np.uint8
    # Colour order: red stays red (OpenCV decodes BGR; we must hand the model RGB).
    np.testing.assert_allclose(rgb[10, 5], (255, 0, 0), atol=8)
    np.testing.assert_allclose(rgb[10, 35], (0, 0, 255), atol=8)


def test_grayscale_becomes_three_channels() -> None:
    data = _pil_bytes(Image.fromarray(np.full((8, 9), 77, np.uint8), mode="L"), "PNG")
    rgb = decode_image(data, BIG)
    assert rgb.shape == (8, 9, 3)
    assert (rgb == 77).all()


def test_alpha_is_dropped() -> None:
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 10
    rgb = decode_image(_pil_bytes(Image.fromarray(rgba, mode="RGBA"), "PNG"), BIG)
    assert rgb.shape == (6, 6, 3)
    assert tuple(rgb[0, 0]) == (200, 0, 0)


def test_sixteen_bit_png_becomes_eight_bit() -> None:
    deep = np.zeros((5, 7, 3), np.uint16)
    deep[..., 2] = 65535  # BGR order for cv2.imencode: the red channel is index 2
    ok, encoded = cv2.imencode(".png", deep)
    assert ok
    rgb = decode_image(encoded.tobytes(), BIG)
    assert rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (255, 0, 0)


def test_animated_gif_gives_first_frame() -> None:
    frames = [
        Image.fromarray(np.full((10, 10, 3), value, np.uint8))
        for value in ((255, 0, 0), (0, 255, 0))
    ]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0
    )
    rgb = decode_image(buffer.getvalue(), BIG)
    np.testing.assert_allclose(rgb[5, 5], (255, 0, 0), atol=8)


def test_exif_orientation_is_honoured() -> None:
    image = Image.fromarray(_halves(20, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    data = _pil_bytes(image, "JPEG", exif=exif.tobytes(), quality=100)
    rgb = decode_image(data, BIG)
    assert rgb.shape == (40, 20, 3)
    # After a clockwise turn the red left half is on top.
    np.testing.assert_allclose(rgb[5, 10], (255, 0, 0), atol=12)
    np.testing.assert_allclose(rgb[35, 10], (0, 0, 255), atol=12)


def test_cmyk_jpeg_decodes() -> None:
    data = _pil_bytes(Image.fromarray(_halves()).convert("CMYK"), "JPEG", quality=100)
    rgb = decode_image(data, BIG)
    assert rgb.shape == (20, 40, 3)
    assert rgb[10, 5, 0] > 200 and rgb[10, 5, 2] < 60


def test_large_jpeg_decodes_at_reduced_scale_but_covers_target() -> None:
    big = cv2.resize(_halves(), (4000, 3000), interpolation=cv2.INTER_NEAREST)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    assert ok
    reduced = decode_image(encoded.tobytes(), BIG, min_size=(224, 224))
    assert reduced.shape == (375, 500, 3)  # 1/8 scale still covers 224x224
    assert decode_image(encoded.tobytes(), BIG).shape == (3000, 4000, 3)


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def test_decompression_bomb_is_refused_from_the_header() -> None:
    data = _png_header_only(30000, 30000)
    assert len(data) < 100
    with pytest.raises(TooManyPixelsError, match="30000x30000"):
        decode_image(data, max_pixels=50_000_000)


def test_truncated_and_garbage_inputs() -> None:
    jpeg = _pil_bytes(Image.fromarray(_halves()), "JPEG")
    with pytest.raises(InvalidImageError):
        decode_image(jpeg[:40], BIG)
    with pytest.raises(UnsupportedMediaTypeError):
        decode_image(b"<html><body>not an image</body></html>", BIG)
    with pytest.raises(UnsupportedMediaTypeError):
        decode_image(b"%PDF-1.7\n", BIG)
    with pytest.raises(InvalidImageError, match="empty"):
        prepare_image(b"", (8, 8), BIG)
    with pytest.raises(InvalidImageError):
        decode_image(_png_header_only(10, 10), BIG)  # header but no pixel data


def test_resize_shape_and_no_op() -> None:
    rgb = _halves()
    assert resize_image(rgb, (224, 224)).shape == (224, 224, 3)
    assert resize_image(rgb, (20, 40)) is not None
    np.testing.assert_array_equal(resize_image(rgb, (20, 40)), rgb)


def test_prepare_image_returns_model_input() -> None:
    data = _pil_bytes(Image.fromarray(_halves(300, 500)), "PNG")
    out = prepare_image(data, (64, 32), BIG)
    assert out.shape == (64, 32, 3)
    assert out.dtype == np.uint8


def test_the_pixel_limit_holds_for_what_the_decoder_produced() -> None:
    from tests.support.hostile_images import jpeg_hiding_its_size  # noqa: PLC0415

    data = jpeg_hiding_its_size(3000, 3000)
    assert read_dimensions(data, "jpeg") == (16, 16)  # the header reader is fooled...
    with pytest.raises(TooManyPixelsError, match="3000x3000"):
        decode_image(data, max_pixels=1_000_000)  # ...the check on the result is not
    assert decode_image(data, max_pixels=10_000_000).shape == (3000, 3000, 3)


def test_a_reduced_jpeg_decode_counts_its_full_size() -> None:
    # 4001x3001 decodes at 1/8 to 501x376, which scaled back (4008x3008) is over the limit.
    big = cv2.resize(_halves(), (4001, 3001), interpolation=cv2.INTER_NEAREST)
    ok, encoded = cv2.imencode(".jpg", big)
    assert ok
    limit = 4001 * 3001 + 2000
    assert prepare_image(encoded.tobytes(), (224, 224), limit).shape == (224, 224, 3)
    with pytest.raises(TooManyPixelsError):
        prepare_image(encoded.tobytes(), (224, 224), 4001 * 3001 - 1)


def test_prepare_image_matches_decode_then_resize() -> None:
    data = _pil_bytes(Image.fromarray(_halves(300, 500)), "PNG")
    expected = resize_image(decode_image(data, BIG, min_size=(64, 32)), (64, 32))
    np.testing.assert_array_equal(prepare_image(data, (64, 32), BIG), expected)
