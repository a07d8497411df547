"""Small valid images of every supported upload format, made here (no downloaded corpora)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

FORMATS = ("jpeg", "png", "gif", "bmp", "webp", "tiff")


@dataclass(frozen=True)
class Seed:
    """A valid file the fuzzer starts from."""

    name: str
    data: bytes


def _picture(width: int, height: int, seed: int = 3) -> np.ndarray:
    """A gradient with a little noise: compresses well, exercises every channel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 4 % 256], axis=-1
    ).astype(np.int16)
    rgb += rng.integers(-8, 9, rgb.shape, dtype=np.int16)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _pil(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _cv2(rgb: np.ndarray, extension: str, *params: int) -> bytes:
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), list(params))
    assert ok, extension
    return encoded.tobytes()


def seeds(image_format: str) -> list[Seed]:
    """Return the seed files of one format: several encoder modes, each a few hundred bytes."""
    rgb = _picture(24, 16)
    image = Image.fromarray(rgb)
    gray = image.convert("L")
    second = Image.fromarray(255 - rgb)
    if image_format == "jpeg":
        exif = Image.Exif()
        exif[0x0112] = 6
        return [
            Seed("baseline", _pil(image, "JPEG", quality=80)),
            Seed("progressive", _pil(image, "JPEG", quality=80, progressive=True)),
            Seed("grayscale", _pil(gray, "JPEG")),
            Seed("4:4:4", _pil(image, "JPEG", subsampling=0)),
            Seed("exif-rotated", _pil(image, "JPEG", exif=exif.tobytes())),
            Seed("cmyk", _pil(image.convert("CMYK"), "JPEG")),
            Seed("restart-interval", _cv2(rgb, ".jpg", cv2.IMWRITE_JPEG_RST_INTERVAL, 1)),
            Seed("optimized", _pil(image, "JPEG", optimize=True)),
        ]
    if image_format == "png":
        deep = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
        return [
            Seed("rgb", _pil(image, "PNG")),
            Seed("palette", _pil(image.quantize(16), "PNG")),
            Seed("gray", _pil(gray, "PNG")),
            Seed("rgba", _pil(image.convert("RGBA"), "PNG")),
            Seed("16-bit", deep[1].tobytes()),
            Seed("1-bit", _pil(image.convert("1"), "PNG")),
            Seed("opencv", _cv2(rgb, ".png")),
            Seed("text-chunks", _pil(image, "PNG", pnginfo=_png_info())),
            Seed("animated", _pil(image, "PNG", save_all=True, append_images=[second])),
            # The default image (IDAT) is not a frame: the first frame comes from fdAT chunks.
            Seed(
                "animated, separate default image",
                _pil(
                    image,
                    "PNG",
                    save_all=True,
                    append_images=[second, Image.fromarray(rgb[::-1].copy())],
                    default_image=True,
                    disposal=[0, 2],
                    blend=[0, 1],
                ),
            ),
        ]
    if image_format == "gif":
        return [
            Seed("static", _pil(image.quantize(32), "GIF")),
            Seed("gray", _pil(gray, "GIF")),
            Seed("interlaced", _pil(image.quantize(32), "GIF", interlace=True)),
            Seed("transparent", _pil(image.quantize(32), "GIF", transparency=0)),
            Seed(
                "animated",
                _pil(
                    image.quantize(32),
                    "GIF",
                    save_all=True,
                    append_images=[second.quantize(32)],
                    duration=50,
                    loop=0,
                ),
            ),
        ]
    if image_format == "bmp":
        return [
            Seed("24-bit", _pil(image, "BMP")),
            Seed("8-bit palette", _pil(image.quantize(16), "BMP")),
            Seed("1-bit", _pil(image.convert("1"), "BMP")),
            Seed("32-bit", _pil(image.convert("RGBA"), "BMP")),
            Seed("gray", _pil(gray, "BMP")),
        ]
    if image_format == "webp":
        return [
            Seed("lossy", _pil(image, "WEBP", quality=70)),
            Seed("lossless", _pil(image, "WEBP", lossless=True)),
            Seed("alpha", _pil(image.convert("RGBA"), "WEBP", quality=70)),
            Seed("animated", _pil(image, "WEBP", save_all=True, append_images=[second])),
        ]
    if image_format == "tiff":
        return [
            Seed("raw", _pil(image, "TIFF")),
            Seed("lzw", _pil(image, "TIFF", compression="tiff_lzw")),
            Seed("deflate", _pil(image, "TIFF", compression="tiff_adobe_deflate")),
            Seed("packbits", _pil(image, "TIFF", compression="packbits")),
            Seed("jpeg", _pil(image, "TIFF", compression="jpeg")),
            Seed("opencv", _cv2(rgb, ".tiff")),
            Seed("gray", _pil(gray, "TIFF")),
            Seed("multi-page", _pil(image, "TIFF", save_all=True, append_images=[second])),
        ]
    raise ValueError(f"unknown format {image_format!r}")


def _png_info() -> object:
    from PIL import PngImagePlugin  # noqa: PLC0415

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a seed")
    info.add_text("Title", "compressed text " * 4, zip=True)
    info.add_itxt("Description", "international text", lang="en")
    return info
