"""Hypothesis strategies for uploads: random bytes, magic numbers with junk, mutated images."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import strategies as st
from PIL import Image

# Every 4xx code the README documents for an upload.
UPLOAD_ERRORS = {
    400: {"invalid_request", "invalid_image"},
    413: {"payload_too_large", "too_many_pixels"},
    415: {"unsupported_media_type"},
}


def _seed_images() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    rgb[:10] = (200, 30, 30)  # some structure, so compressors keep real segments
    image = Image.fromarray(rgb)

    def save(image_format: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=image_format, **options)
        return buffer.getvalue()

    return {
        "jpeg": save("JPEG", quality=90),
        "progressive jpeg": save("JPEG", progressive=True),
        "png": save("PNG"),
        "gif": save("GIF"),
        "webp": save("WEBP", quality=80),
        "lossless webp": save("WEBP", lossless=True),
        "bmp": save("BMP"),
        "tiff": save("TIFF"),
        "deflate tiff": save("TIFF", compression="tiff_deflate"),
    }


SEEDS = _seed_images()
MAGIC = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"BM",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"II*\x00",
    b"MM\x00*",
]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid image with a few random bit flips, truncations, insertions or overwrites."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            chunk = draw(st.sampled_from([b"\x00" * 4, b"\xff" * 4, b"\x7f\xff\xff\xff", b"\x80"]))
            data[position : position + len(chunk)] = chunk
    return bytes(data)


uploads = st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=512)),
    mutated_images(),
)
