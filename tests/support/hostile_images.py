"""Hostile image files, generated small: decoder crashes, lying lengths and sizes, bombs.

Each builder returns the bytes of one file of an attack class of issue 10 (see
docs/security.md for what each does to an unprotected OpenCV decode on this project's
OpenCV build). Nothing here needs a network or a fixture file.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# 7000 x 7000 = 49 MP: just under the default MAX_IMAGE_PIXELS (50 MP).
AT_PIXEL_LIMIT = 7000


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """Return one PNG chunk: length, type, body, CRC."""
    crc = struct.pack(">I", zlib.crc32(kind + body))
    return struct.pack(">I", len(body)) + kind + body + crc


def _ihdr(width: int, height: int, depth: int = 8, color_type: int = 2) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))


def _fctl(
    sequence: int, width: int, height: int, x: int = 0, y: int = 0, *, dispose: int = 0
) -> bytes:
    body = struct.pack(">IIIIIHHBB", sequence, width, height, x, y, 1, 10, dispose, 0)
    return png_chunk(b"fcTL", body)


def png_claiming_idat(claim: int = 0xFFFFFFF0) -> bytes:
    """An 83-byte PNG whose IDAT length field claims ``claim`` bytes (4 GB by default).

    OpenCV's PNG reader (its APNG chunk walker) sizes a buffer from the length field before
    it knows the data is not there.
    """
    data = PNG_SIGNATURE + _ihdr(1, 1) + struct.pack(">I", claim) + b"IDAT"
    data += zlib.compress(b"\x00" * 4, 9)
    return data + bytes(83 - len(data))


def apng_gray(size: int = 3000, frames: int = 2, dispose: int = 0) -> bytes:
    """A grayscale animated PNG: acTL, fcTL and fdAT around blank frames.

    With ``dispose=1`` (clear the first frame's area once shown) OpenCV 5.0.0's APNG reader
    clears three bytes per pixel of its one-byte-per-pixel grey frame buffer: a heap
    overflow, which glibc stops with "double free or corruption" (SIGABRT).
    """
    raw = zlib.compress(b"".join(b"\x00" + bytes(size) for _ in range(size)), 9)
    data = (
        PNG_SIGNATURE + _ihdr(size, size, 8, 0) + png_chunk(b"acTL", struct.pack(">II", frames, 0))
    )
    data += _fctl(0, size, size, dispose=dispose) + png_chunk(b"IDAT", raw)
    sequence = 1
    for _ in range(frames - 1):
        data += _fctl(sequence, size, size)
        data += png_chunk(b"fdAT", struct.pack(">I", sequence + 1) + raw)
        sequence += 2
    return data + png_chunk(b"IEND", b"")


def apng_bad_chunk_type(size: int = 32) -> bytes:
    """A grey animated PNG whose frame data chunk has a type that is not four letters.

    libpng reports it with png_error, a longjmp to the jmp_buf OpenCV 5.0.0 set in a
    function that has already returned: a segmentation fault.
    """
    raw = zlib.compress(b"".join(b"\x00" + bytes(size) for _ in range(size)), 9)
    data = PNG_SIGNATURE + _ihdr(size, size, 8, 0) + png_chunk(b"acTL", struct.pack(">II", 2, 0))
    data += png_chunk(b"IDAT", raw) + _fctl(1, size, size)
    data += png_chunk(b"f\x8eA\xc4", struct.pack(">I", 2) + raw)
    return data + png_chunk(b"IEND", b"")


def apng_bad_frame(width: int = 16, height: int = 16) -> bytes:
    """An animated PNG whose second frame is larger than the canvas and offset past it."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(width * 3) for _ in range(height)), 9)
    data = PNG_SIGNATURE + _ihdr(width, height) + png_chunk(b"acTL", struct.pack(">II", 2, 0))
    data += _fctl(0, width, height) + png_chunk(b"IDAT", raw)
    data += _fctl(1, 0xFFFFFFF0, 0x20, 0x20, 0xFFFFFFF0)
    data += png_chunk(b"fdAT", struct.pack(">I", 2) + raw)
    return data + png_chunk(b"IEND", b"")


def _small_gray_jpeg() -> bytes:
    image = Image.new("L", (16, 16), 128)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


def _set_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    position = 2
    while position < len(jpeg):
        marker = jpeg[position + 1]
        length = struct.unpack(">H", jpeg[position + 2 : position + 4])[0]
        if marker == 0xC0:
            size = struct.pack(">HH", height, width)
            return jpeg[: position + 5] + size + jpeg[position + 9 :]
        position += 2 + length
    raise ValueError("no SOF0")


def jpeg_hiding_its_size(width: int = 10000, height: int = 10000) -> bytes:
    """A few hundred bytes of JPEG that a marker walker reads as 16x16; libjpeg sees 10000x10000.

    After SOI comes ``FF 00`` with a length: a walker that trusts every length jumps over
    the real frame to a decoy 16x16 SOF, while libjpeg treats ``FF 00`` as stray bytes,
    scans on, finds the real frame header and, when the entropy data runs out, fills the
    rest of the 10000x10000 image with grey.
    """
    real = _set_jpeg_size(_small_gray_jpeg(), width, height)
    body = real[2:-2]  # without SOI and EOI; the scan data is cut short by the decoy
    decoy = b"\xff\xc0\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00"
    hidden_length = 2 + len(body)
    if 0xFF in struct.pack(">H", hidden_length):
        body += b"\x00"
        hidden_length += 1
    return b"\xff\xd8\xff\x00" + struct.pack(">H", hidden_length) + body + decoy + b"\xff\xd9"


def progressive_scan_bomb(size: int = 1024, scans: int = 8000) -> bytes:
    """A progressive JPEG whose last scan is repeated ``scans`` times (about 14 bytes each).

    libjpeg accepts a repeated scan with a warning and runs each over every block of the
    image, so decode time grows with the number of scans, not with the pixels.
    """
    image = Image.new("L", (size, size), 128)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, progressive=True)
    data = buffer.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    scan = data[last_scan:-2]
    return data[:-2] + scan * scans + b"\xff\xd9"


def gif_expanding(width: int = AT_PIXEL_LIMIT, height: int = AT_PIXEL_LIMIT) -> bytes:
    """A 35-byte GIF: a huge logical screen around a single 1x1 image."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    lzw = b"\x02\x02\x44\x01\x00"  # minimum code size 2: clear, index 0, end
    return header + palette + image + lzw + b"\x3b"


def bmp_expanding(width: int = AT_PIXEL_LIMIT, height: int = AT_PIXEL_LIMIT) -> bytes:
    """A 66-byte RLE8 BMP that says "end of bitmap" at once: every pixel is palette entry 0."""
    palette = b"\x00\x00\x00\x00\xff\xff\xff\x00"
    pixels = b"\x00\x01"  # RLE8 escape: end of bitmap
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 2, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def webp_expanding(width: int = AT_PIXEL_LIMIT, height: int = AT_PIXEL_LIMIT) -> bytes:
    """A lossless WebP of one colour: about 2 KB for 49 MP."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


def tiff_expanding(width: int = AT_PIXEL_LIMIT, height: int = AT_PIXEL_LIMIT) -> bytes:
    """A TIFF of a few KB: every deflate strip offset points at the same compressed blank strip."""
    rows_per_strip = 100
    strips = -(-height // rows_per_strip)
    blob = zlib.compress(bytes(width * 3 * rows_per_strip), 9)
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),  # bits per sample (one value for all three: readers accept it)
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 2),  # RGB
        (273, 4, strips, 0),  # strip offsets: filled in below
        (277, 3, 1, 3),
        (278, 4, 1, rows_per_strip),
        (279, 4, strips, 0),  # strip byte counts
        (284, 3, 1, 1),
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    offsets_at = ifd_offset + ifd_size
    counts_at = offsets_at + 4 * strips
    blob_at = counts_at + 4 * strips
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, given in entries:
        value = {273: offsets_at, 279: counts_at}.get(tag, given)
        if kind == 3 and count == 1:
            ifd += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    arrays = struct.pack(f"<{strips}I", *([blob_at] * strips))
    arrays += struct.pack(f"<{strips}I", *([len(blob)] * strips))
    return b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + arrays + blob


def tiff_huge_tiles(width: int = 16, height: int = 16, tile: int = 16384) -> bytes:
    """A 16x16 TIFF whose one tile is declared 16384x16384: a reader that sizes its tile
    buffer from the tag allocates for 268 MP, though the image has 256 pixels."""
    blob = zlib.compress(bytes(tile * 3 * 16), 9)
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 8),
        (262, 3, 1, 2),
        (277, 3, 1, 3),
        (284, 3, 1, 1),
        (322, 4, 1, tile),  # tile width
        (323, 4, 1, tile),  # tile length
        (324, 4, 1, 0),  # tile offsets
        (325, 4, 1, len(blob)),  # tile byte counts
    ]
    ifd_offset = 8
    blob_at = ifd_offset + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, given in entries:
        value = blob_at if tag == 324 else given
        if kind == 3:
            ifd += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + blob


@dataclass(frozen=True)
class HostileFile:
    """One hostile file, its attack class (issue 10's numbering) and the answers it may get:
    error codes, or "ok" where a contained decoder may decode it (a valid but costly file)."""

    name: str
    attack_class: int
    data: bytes
    answers: frozenset[str]


_UNDECODABLE = frozenset({"invalid_image"})
_REFUSED = frozenset({"too_many_pixels"})
_COSTLY = frozenset({"ok", "invalid_image", "too_many_pixels"})


def hostile_files() -> list[HostileFile]:
    """Every hostile file, with the answers a contained decoder may give it."""
    return [
        HostileFile("APNG, frame outside the canvas", 1, apng_bad_frame(), _UNDECODABLE),
        HostileFile(
            "grey APNG clearing its frame (heap overflow)",
            1,
            apng_gray(32, dispose=1),
            _UNDECODABLE,
        ),
        HostileFile("grey APNG, bad chunk type (SIGSEGV)", 1, apng_bad_chunk_type(), _UNDECODABLE),
        HostileFile("PNG claiming a 4 GB IDAT", 2, png_claiming_idat(), _UNDECODABLE),
        HostileFile("PNG claiming a 1 GB IDAT", 2, png_claiming_idat(1 << 30), _UNDECODABLE),
        HostileFile("JPEG hiding a 10000x10000 frame", 3, jpeg_hiding_its_size(), _REFUSED),
        HostileFile("TIFF with 16384x16384 tiles", 3, tiff_huge_tiles(), _UNDECODABLE),
        HostileFile("progressive JPEG, 8000 scans", 4, progressive_scan_bomb(), _UNDECODABLE),
        HostileFile("GIF, 49 MP screen", 5, gif_expanding(), _COSTLY),
        HostileFile("BMP RLE8, 49 MP", 5, bmp_expanding(), _COSTLY),
        HostileFile("TIFF, 49 MP of shared strips", 5, tiff_expanding(), _COSTLY),
        HostileFile("WebP, 49 MP of one colour", 5, webp_expanding(), _COSTLY),
        HostileFile("grey APNG, 9 MP", 5, apng_gray(), _COSTLY),
    ]
