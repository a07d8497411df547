"""Hostile and unusual uploads, each with what the service must answer (README's error table).

Unusual but valid images come with a reference: a plain 8-bit RGB PNG of the pixels the
service must see, so a test can check both give the model the same input.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

BOUNDARY = "hostile-boundary-7MA4YWxkTrZu0gW"


@dataclass(frozen=True)
class Hostile:
    """A request body and headers, and the status and error code it must get."""

    name: str
    body: bytes
    content_type: str | None
    status: int
    code: str
    path: str = "/predict"


@dataclass(frozen=True)
class Unusual:
    """A valid upload in an unusual form, and a plain PNG of the pixels it stands for."""

    name: str
    data: bytes
    reference_png: bytes
    exact: bool = True  # False: a different decoder may round differently (CMYK)
    filename: bytes = b"photo.jpg"


def encode(rgb: np.ndarray, extension: str = ".png", *params: int) -> bytes:
    """Encode an RGB uint8 array with OpenCV."""
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), list(params))
    assert ok
    return encoded.tobytes()


def pil_bytes(image: Image.Image, image_format: str, **options: object) -> bytes:
    """Save a PIL image to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk declaring width x height, and no pixel data."""
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def multipart(parts: list[tuple[bytes, bytes | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """Build a multipart/form-data body by hand from (name, filename, content) parts."""
    body = b""
    for name, filename, content in parts:
        disposition = b'Content-Disposition: form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary.encode() + b"\r\n" + disposition + b"\r\n"
        if filename is not None:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + content + b"\r\n"
    return body + b"--" + boundary.encode() + b"--\r\n"


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def hostile_corpus(photo_jpeg: bytes) -> list[Hostile]:
    """Every kind of bad upload, with its documented answer."""

    def form(content: bytes, name: bytes = b"file", filename: bytes = b"photo.jpg") -> bytes:
        return multipart([(name, filename, content)])

    many_fields = multipart([(f"field{index}".encode(), None, b"x") for index in range(1000)])
    return [
        Hostile("empty body, no type", b"", None, 400, "invalid_request"),
        Hostile("empty raw image", b"", "image/jpeg", 400, "invalid_request"),
        Hostile("zero-byte file", form(b""), MULTIPART, 400, "invalid_request"),
        Hostile(
            "truncated JPEG",
            form(photo_jpeg[: len(photo_jpeg) // 2]),
            MULTIPART,
            400,
            "invalid_image",
        ),
        Hostile("JPEG header only", form(photo_jpeg[:400]), MULTIPART, 400, "invalid_image"),
        Hostile(
            "text named .jpg",
            form(b"just some text\n" * 20),
            MULTIPART,
            415,
            "unsupported_media_type",
        ),
        Hostile(
            "HTML named .jpg",
            form(b"<!doctype html><html><body>hi</body></html>"),
            MULTIPART,
            415,
            "unsupported_media_type",
        ),
        Hostile(
            "PDF named .jpg",
            form(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"),
            MULTIPART,
            415,
            "unsupported_media_type",
        ),
        Hostile(
            "PNG declaring 30000x30000",
            form(png_header_only(30000, 30000)),
            MULTIPART,
            413,
            "too_many_pixels",
        ),
        Hostile(
            "raw PNG declaring 30000x30000",
            png_header_only(30000, 30000),
            "image/png",
            413,
            "too_many_pixels",
        ),
        Hostile(
            "wrong field name", form(photo_jpeg, name=b"image"), MULTIPART, 400, "invalid_request"
        ),
        Hostile(
            "malformed multipart",
            b"--nope\r\ngarbage without end",
            MULTIPART,
            400,
            "invalid_request",
        ),
        Hostile(
            "multipart without boundary",
            form(photo_jpeg),
            "multipart/form-data",
            400,
            "invalid_request",
        ),
        Hostile("multipart cut short", form(photo_jpeg)[:300], MULTIPART, 400, "invalid_request"),
        Hostile("1000 form fields", many_fields, MULTIPART, 413, "payload_too_large"),
        Hostile(
            "JSON Content-Type", b'{"file": "x"}', "application/json", 415, "unsupported_media_type"
        ),
        Hostile("text/plain Content-Type", b"hello", "text/plain", 415, "unsupported_media_type"),
        Hostile(
            "urlencoded form",
            b"file=abc",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        # RFC 7578 asks for UTF-8 (or percent-encoded) file names; Werkzeug cannot parse raw
        # Latin-1 bytes in a part header, and the service says so rather than guess.
        Hostile(
            "non-UTF-8 file name",
            form(photo_jpeg, filename=b"caf\xe9 \xff.jpg"),
            MULTIPART,
            400,
            "invalid_request",
        ),
        Hostile("bad top_k", photo_jpeg, "image/jpeg", 400, "invalid_request", "/predict?top_k=0"),
        Hostile(
            "/hello with text", b"hello", "image/jpeg", 415, "unsupported_media_type", "/hello"
        ),
    ]


def unusual_images(photo_rgb: np.ndarray) -> list[Unusual]:
    """Valid images in unusual forms, each with a plain PNG of the pixels it stands for."""
    rgb = cv2.resize(photo_rgb, (96, 64), interpolation=cv2.INTER_AREA)
    plain = encode(rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack(
        [rgb, np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None, :].repeat(64, 0)]
    )
    # 16 bits per channel: value v * 257 decodes back to exactly v.
    ok, deep = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    assert ok
    cmyk = pil_bytes(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    first = Image.fromarray(rgb).quantize(16).convert("RGB")
    second = Image.fromarray(255 - rgb).quantize(16).convert("RGB")
    gif = pil_bytes(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, to be shown turned 90 degrees clockwise
    rotated = pil_bytes(Image.fromarray(rgb), "JPEG", exif=exif.tobytes(), quality=95)
    stored = cv2.imdecode(
        np.frombuffer(rotated, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    )
    upright = np.rot90(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB), -1)
    return [
        Unusual("16-bit PNG", deep.tobytes(), plain),
        Unusual(
            "CMYK JPEG",
            cmyk,
            encode(np.asarray(Image.open(io.BytesIO(cmyk)).convert("RGB"))),
            exact=False,
        ),
        Unusual(
            "grayscale PNG",
            pil_bytes(Image.fromarray(gray, mode="L"), "PNG"),
            encode(np.dstack([gray] * 3)),
        ),
        Unusual(
            "RGBA PNG (alpha dropped)", pil_bytes(Image.fromarray(rgba, mode="RGBA"), "PNG"), plain
        ),
        Unusual("animated GIF (first frame)", gif, encode(np.asarray(first))),
        Unusual("EXIF-rotated JPEG", rotated, encode(np.ascontiguousarray(upright))),
        Unusual("lossless WebP", pil_bytes(Image.fromarray(rgb), "WEBP", lossless=True), plain),
        Unusual("BMP", pil_bytes(Image.fromarray(rgb), "BMP"), plain),
        Unusual("TIFF", pil_bytes(Image.fromarray(rgb), "TIFF", compression="tiff_deflate"), plain),
        Unusual("UTF-8 file name", plain, plain, filename="café 写真.png".encode()),
    ]


def strip_image(photo_rgb: np.ndarray, length: int = 100_000) -> np.ndarray:
    """A 1 x length RGB strip cut from the photo (an extreme aspect ratio)."""
    row = photo_rgb[photo_rgb.shape[0] // 2]
    return np.ascontiguousarray(np.resize(row, (length, 3))[np.newaxis])


# The unusual-but-valid cases every suite checks, by name.
UNUSUAL_NAMES = [
    "16-bit PNG",
    "CMYK JPEG",
    "grayscale PNG",
    "RGBA PNG (alpha dropped)",
    "animated GIF (first frame)",
    "EXIF-rotated JPEG",
    "lossless WebP",
    "BMP",
    "TIFF",
    "UTF-8 file name",
]
