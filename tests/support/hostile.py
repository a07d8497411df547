"""Hostile requests across issue 10's classes, generated here: lying lengths, bombs, bad HTTP.

Each case is a complete request (an upload to /predict, a /v2 inference request, or raw
HTTP bytes for what a client library will not send) and the statuses the service may answer
with. The classes are issue 10's: 1 malformed files that crash native decoders, 2 declared
lengths that allocate, 3 dimension lies past the pixel limit, 4 decode-time bombs, 5 tiny
files that expand, 7 malformed requests answered 500, 8 chunked bodies past the upload limit.
Image files also serve the decode-path tests (tests/integration/test_hostile_images.py).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache

import cv2
import numpy as np
from PIL import Image

from tests.support.fuzzing.mutations import png_chunk, png_chunks
from tests.support.fuzzing.seeds import seeds

BOUNDARY = "hostile-suite-boundary-3f9a"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
CLIENT_ERRORS = frozenset(range(400, 500))
# A valid image with something odd about it may be predicted (200) or refused (4xx).
IMAGE_OR_CLIENT_ERROR = CLIENT_ERRORS | {200}
MODEL_PLACEHOLDER = "{model}"  # replaced by the served model's name when sent
V2_INFER = f"/v2/models/{MODEL_PLACEHOLDER}/infer"
LIMIT_SIDE = 7000  # 49 MP: just under the default MAX_IMAGE_PIXELS (50 MP)
LIE_SIDE = 10000  # 100 MP: twice the limit


@dataclass(frozen=True)
class HostileCase:
    """One hostile request and the statuses allowed in answer."""

    name: str
    issue_class: int
    body: bytes | Callable[[], bytes] = b""  # a callable builds a big body only when sent
    content_type: str | None = "application/octet-stream"
    path: str = "/predict"
    raw: bytes | Callable[[], bytes] | None = None  # a whole HTTP request, sent as is
    headers: tuple[tuple[str, str], ...] = ()
    statuses: frozenset[int] = CLIENT_ERRORS
    image: bool = False  # body is an image file (also replayed through the decode path)
    also_v2: bool = False  # also send the image as a /v2 BYTES input
    notes: str = ""
    tags: tuple[str, ...] = field(default=())

    def body_bytes(self) -> bytes:
        """Return the request body (building it if it is built lazily)."""
        return self.body() if callable(self.body) else self.body

    def raw_bytes(self) -> bytes | None:
        """Return the raw HTTP request, if the case is one."""
        return self.raw() if callable(self.raw) else self.raw


# --- small builders ------------------------------------------------------------------------


def _png(width: int, height: int, bit_depth: int, colour: int, rows: bytes, *extra: bytes) -> bytes:
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0))
    return (
        b"\x89PNG\r\n\x1a\n"
        + header
        + b"".join(extra)
        # Level 1 for big inputs: level 9 costs seconds on tens of MB for a 4x smaller file.
        + png_chunk(b"IDAT", zlib.compress(rows, 9 if len(rows) < 16 << 20 else 1))
        + png_chunk(b"IEND", b"")
    )


def _zero_rows(width: int, height: int, bytes_per_row: int) -> bytes:
    return bytes((1 + bytes_per_row) * height)


def _claimed_length(data: bytes, kind: bytes, length: int) -> bytes:
    """Rewrite the length field of the first chunk of this type (its CRC is left as it was)."""
    for offset, chunk_kind, _ in png_chunks(data):
        if chunk_kind == kind:
            return data[:offset] + struct.pack(">I", length) + data[offset + 4 :]
    raise ValueError(kind)


def _with_chunk(data: bytes, kind: bytes, payload: bytes, claimed: int | None = None) -> bytes:
    """Insert a chunk after IHDR; with claimed, its length field claims that many bytes."""
    chunk = png_chunk(kind, payload)
    if claimed is not None:
        chunk = struct.pack(">I", claimed) + chunk[4:]
    return data[:33] + chunk + data[33:]


def _jpeg_tables() -> bytes:
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + b"\x01" * 64
    # One-code Huffman tables: the bit 0 is DC difference 0 / AC end-of-block, so missing
    # entropy data (which libjpeg pads with zeros) decodes as a flat grey image.
    dht_dc = b"\xff\xc4" + struct.pack(">H", 20) + b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00"
    dht_ac = b"\xff\xc4" + struct.pack(">H", 20) + b"\x10" + b"\x01" + b"\x00" * 15 + b"\x00"
    return dqt + dht_dc + dht_ac


def _sof(marker: int, width: int, height: int, components: int = 1) -> bytes:
    body = struct.pack(">BHHB", 8, height, width, components)
    for index in range(components):
        body += bytes([index + 1, 0x11, 0])
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def _sos(components: int, start: int, end: int, approximation: int = 0) -> bytes:
    body = bytes([components])
    for index in range(components):
        body += bytes([index + 1, 0x00])
    body += bytes([start, end, approximation])
    return b"\xff\xda" + struct.pack(">H", len(body) + 2) + body


def flat_jpeg(width: int, height: int, components: int = 1) -> bytes:
    """A baseline JPEG of any size in about 200 bytes (libjpeg pads the missing scan data)."""
    return (
        b"\xff\xd8"
        + _jpeg_tables()
        + _sof(0xC0, width, height, components)
        + _sos(components, 0, 63)
        + b"\x00" * 8
        + b"\xff\xd9"
    )


def scan_bomb_jpeg(width: int, height: int, scans: int, components: int = 1) -> bytes:
    """A progressive JPEG with a DC scan and then `scans` AC scans over the whole image."""
    body = b"\xff\xd8" + _jpeg_tables() + _sof(0xC2, width, height, components)
    body += _sos(components, 0, 0) + b"\x00\x00"
    ac_scans = b"".join(
        _sos(1, 1, 63).replace(b"\x01\x00", bytes([1 + index % components, 0]), 1) + b"\x00"
        for index in range(scans)
    )
    return body + ac_scans + b"\xff\xd9"


def progressive_flat_jpeg(width: int, height: int, components: int = 3) -> bytes:
    """A progressive JPEG at the pixel limit: libjpeg keeps every coefficient in memory."""
    return scan_bomb_jpeg(width, height, components, components)


def hidden_frame_jpeg(width: int, height: int) -> bytes:
    """A JPEG whose header check sees a 16x16 frame while libjpeg decodes width x height.

    After SOI, ``FF 00`` is a stuffed zero to libjpeg (skipped as garbage) but a marker with
    a length to a naive reader, which then lands inside an APP1 segment holding a fake frame
    header. libjpeg skips the APP1 whole and reads the real one.
    """
    fake_sof = _sof(0xC0, 16, 16)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + len(fake_sof)) + fake_sof
    return b"\xff\xd8" + b"\xff\x00\x00\x06" + app1 + flat_jpeg(width, height)[2:]


def tiff(
    width: int,
    height: int,
    strip: bytes,
    *,
    compression: int = 8,
    samples: int = 1,
    rows_per_strip: int | None = None,
    extra: tuple[tuple[int, int, int, int], ...] = (),
    order: str = "<",
    drop: tuple[int, ...] = (),
    prefix: tuple[tuple[int, int, int, int], ...] = (),
) -> bytes:
    """A TIFF whose strips all point at one compressed blob (a tiny file, a huge image)."""
    rows = rows_per_strip or height
    strip_count = -(-height // rows)
    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    entries: list[tuple[int, int, int, int]] = [
        *prefix,
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, compression),
        (262, 3, 1, 2 if samples == 3 else 1),
        (273, 4, strip_count, 0),
        (277, 3, 1, samples),
        (278, 4, 1, rows),
        (279, 4, strip_count, 0),
        (284, 3, 1, 1),
        *extra,
    ]
    entries = [entry for entry in entries if entry[0] not in drop]
    ifd_size = 2 + 12 * len(entries) + 4
    blob_offset = 8 + ifd_size
    arrays_offset = blob_offset + len(strip) + (len(strip) & 1)
    offsets = struct.pack(order + f"{strip_count}I", *([blob_offset] * strip_count))
    counts = struct.pack(order + f"{strip_count}I", *([len(strip)] * strip_count))
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, count, given in entries:
        value = given
        if tag == 273:
            value = blob_offset if strip_count == 1 else arrays_offset
        elif tag == 279:
            value = len(strip) if strip_count == 1 else arrays_offset + len(offsets)
        if kind == 3 and count == 1:
            ifd += struct.pack(order + "HHIHH", tag, kind, count, value, 0)
        else:
            ifd += struct.pack(order + "HHII", tag, kind, count, value)
    ifd += struct.pack(order + "I", 0)
    tail = offsets + counts if strip_count > 1 else b""
    return header + ifd + strip + b"\x00" * (len(strip) & 1) + tail


def _deflated_zero_rows(width: int, rows: int, samples: int) -> bytes:
    return zlib.compress(bytes(width * rows * samples), 9)


def gif(
    screen: tuple[int, int], frame: tuple[int, int, int, int], lzw: bytes, frames: int = 1
) -> bytes:
    """A GIF with a 2-colour table and `frames` copies of one image block."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    block = b"\x2c" + struct.pack("<HHHHB", *frame, 0) + b"\x02"
    for start in range(0, len(lzw), 255):
        piece = lzw[start : start + 255]
        block += bytes([len(piece)]) + piece
    block += b"\x00"
    return header + block * frames + b"\x3b"


def bmp_rle(width: int, height: int, rle: bytes, bits: int = 8) -> bytes:
    """A palette BMP with RLE8 (or RLE4) pixel data."""
    palette = b"\x00\x00\x00\x00\xff\xff\xff\x00"
    offset = 14 + 40 + len(palette)
    info = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, bits, 1 if bits == 8 else 2, len(rle), 0, 0, 2, 0
    )
    return b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle


def _pil(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _webp_lossless_flat(width: int, height: int) -> bytes:
    """A lossless WebP of one colour in about 30 bytes: single-symbol codes cost 0 bits a pixel."""
    bits: list[tuple[int, int]] = [(width - 1, 14), (height - 1, 14), (0, 1), (0, 3)]
    bits += [(0, 1), (0, 1), (0, 1)]  # no transform, no colour cache, no meta prefix codes
    for symbol in (0, 0, 0, 255, 0):  # green, red, blue, alpha, distance
        # A "simple" prefix code with one symbol: 1, 0, then 1-bit or 8-bit symbol.
        bits += [(1, 1), (0, 1)] + ([(0, 1), (0, 1)] if symbol == 0 else [(1, 1), (symbol, 8)])
    value = position = 0
    for field_value, size in bits:
        value |= field_value << position
        position += size
    # OpenCV wants at least 32 bytes of file; bytes after the bitstream are ignored.
    payload = b"\x2f" + value.to_bytes(-(-position // 8), "little") + bytes(8)
    payload += b"\x00" * (len(payload) & 1)
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_canvas_lie(canvas: tuple[int, int], image: bytes) -> bytes:
    """Wrap a simple WebP's bitstream in a VP8X header declaring another canvas size."""
    chunk = image[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (canvas[0] - 1).to_bytes(3, "little") + (canvas[1] - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


@cache
def photo(image_format: str) -> bytes:
    """A 96x64 photo-like image in the format (the truncation cases cut it)."""
    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 2, y * 3, (x * y) % 256], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb)
    options: dict[str, object] = {
        "jpeg": {"quality": 85},
        "png": {},
        "gif": {},
        "bmp": {},
        "webp": {"quality": 80},
        "tiff": {"compression": "tiff_lzw"},
    }[image_format]
    return _pil(image, image_format.upper(), **options)


# --- the cases, class by class --------------------------------------------------------------


def _image(
    name: str, issue_class: int, data: bytes | Callable[[], bytes], **options: object
) -> HostileCase:
    """An image upload: decoded within limits (200) or refused (4xx), unless told otherwise."""
    options.setdefault("statuses", IMAGE_OR_CLIENT_ERROR)
    return HostileCase(name, issue_class, body=data, image=True, **options)  # type: ignore[arg-type]


def class1_malformed() -> list[HostileCase]:
    """Truncated, empty, polyglot and malformed animated files (native decoder crashes)."""
    cases = []
    for image_format in ("jpeg", "png", "gif", "bmp", "webp", "tiff"):
        data = photo(image_format)
        for fraction in (0.1, 0.5, 0.97):
            cut = data[: max(8, int(len(data) * fraction))]
            cases.append(
                _image(
                    f"truncated {image_format} at {fraction:.0%}",
                    1,
                    cut,
                    also_v2=fraction == 0.5,
                )
            )
    magic = {
        "jpeg": b"\xff\xd8\xff",
        "png": b"\x89PNG\r\n\x1a\n",
        "gif": b"GIF89a",
        "bmp": b"BM",
        "webp": b"RIFF\x00\x00\x00\x00WEBP",
        "tiff": b"II*\x00",
    }
    for image_format, signature in magic.items():
        cases.append(_image(f"{image_format} signature only", 1, signature, statuses=CLIENT_ERRORS))
    cases += [
        HostileCase("zero-size raw upload", 1, b"", content_type="image/png"),
        HostileCase("zero-size multipart file", 1, _multipart(b""), content_type=MULTIPART),
    ]
    jpeg, png = photo("jpeg"), photo("png")
    polyglot = {
        "JPEG followed by a ZIP archive": jpeg + _zip_stub(),
        "PNG followed by HTML": png + b"<html><script>alert(1)</script></html>",
        "GIF header that is also JavaScript": b"GIF89a=1;/*" + photo("gif")[11:] + b"*/",
        "PNG signature on JPEG data": b"\x89PNG\r\n\x1a\n" + jpeg,
        "JPEG with a PNG inside a COM segment": jpeg[:2]
        + b"\xff\xfe"
        + struct.pack(">H", len(png) + 2)
        + png
        + jpeg[2:],
        "BMP header on a TIFF": b"BM" + photo("tiff"),
    }
    for name, data in polyglot.items():
        cases.append(_image(f"polyglot: {name}", 1, data, statuses=IMAGE_OR_CLIENT_ERROR))
    cases += _apng_cases()
    return cases


def _apng_cases() -> list[HostileCase]:
    (animated,) = [seed.data for seed in seeds("png") if seed.name == "animated"]
    chunks = [(kind, payload) for _, kind, payload in png_chunks(animated)]

    def rebuilt(change: dict[int, bytes]) -> bytes:
        return b"\x89PNG\r\n\x1a\n" + b"".join(
            png_chunk(kind, change.get(index, payload))
            for index, (kind, payload) in enumerate(chunks)
        )

    frame_controls = [index for index, (kind, _) in enumerate(chunks) if kind == b"fcTL"]
    cases = []
    variants = {
        "frame wider than the canvas": (1000, 20, 0, 0),
        "frame offset past the canvas": (24, 16, 60000, 60000),
        "frame of 0x0": (0, 0, 0, 0),
        "frame offset plus width overflows": (24, 16, 0xFFFFFFF0, 0),
        "frame at the pixel limit": (LIMIT_SIDE, LIMIT_SIDE, 0, 0),
    }
    for name, (width, height, x, y) in variants.items():
        for which, index in (("first", frame_controls[0]), ("second", frame_controls[-1])):
            payload = bytearray(chunks[index][1])
            payload[4:20] = struct.pack(">IIII", width, height, x, y)
            cases.append(_image(f"APNG {which} fcTL: {name}", 1, rebuilt({index: bytes(payload)})))
    cases += _apng_frame_data_cases()
    actl = next(index for index, (kind, _) in enumerate(chunks) if kind == b"acTL")
    cases.append(
        _image("APNG claims 2^31 frames", 1, rebuilt({actl: struct.pack(">II", 1 << 31, 0)}))
    )
    return cases


def _apng_frame_data_cases() -> list[HostileCase]:
    """APNGs with corrupt frame data: the fuzzer's SIGSEGV in OpenCV's APNG reader.

    With the default image apart from the animation, the first frame is read from fdAT
    chunks; a libpng error there (a bad row filter) crashes the process.
    """
    cases = []
    for seed_name in ("animated, separate default image", "animated"):
        (animated,) = [seed.data for seed in seeds("png") if seed.name == seed_name]
        for corruption in ("bad row filter", "zlib data cut short"):
            cases.append(
                _image(
                    f"APNG ({seed_name}): {corruption} in the first fdAT",
                    1,
                    _corrupt_first_frame_data(animated, corruption),
                )
            )
    return cases


def _corrupt_first_frame_data(animated: bytes, corruption: str) -> bytes:
    chunks = [(kind, payload) for _, kind, payload in png_chunks(animated)]
    index = next(i for i, (kind, _) in enumerate(chunks) if kind == b"fdAT")
    payload = chunks[index][1]
    rows = bytearray(zlib.decompress(payload[4:]))
    if corruption == "bad row filter":
        rows[0] = 7  # filter types are 0-4
        compressed = zlib.compress(bytes(rows))
    else:
        compressed = zlib.compress(bytes(rows))[: len(rows) // 4]
    chunks[index] = (b"fdAT", payload[:4] + compressed)
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, data) for kind, data in chunks)


def corpus_cases() -> list[HostileCase]:
    """The fuzzer's kept findings (tests/corpus/hostile/), each as an upload."""
    from tests.support.fuzzing.campaign import CORPUS, load_manifest  # noqa: PLC0415

    classes = {"crash": 1, "exception": 1, "balloon": 5, "hang": 4}
    return [
        _image(
            corpus_case_name(name, entry["kind"]),
            classes[entry["kind"]],
            (CORPUS / name).read_bytes(),
            tags=("corpus",),
        )
        for name, entry in sorted(load_manifest().items())
    ]


def corpus_case_name(file_name: str, kind: str) -> str:
    """Return the hostile-case name of a corpus file."""
    return f"corpus {file_name} ({kind})"


def _zip_stub() -> bytes:
    return b"PK\x03\x04" + b"\x00" * 26 + b"PK\x05\x06" + b"\x00" * 18


def _multipart(content: bytes, filename: bytes = b"image.png") -> bytes:
    return (
        b"--" + BOUNDARY.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
        b"--" + BOUNDARY.encode() + b"--\r\n"
    )


def class2_declared_lengths() -> list[HostileCase]:
    """Length fields that claim far more than the file holds."""
    small = _png(16, 16, 8, 2, _zero_rows(16, 16, 48))
    cases = []
    for claimed in (1 << 28, 1 << 30, 0x5FFFFFFF):
        cases.append(
            _image(
                f"PNG IDAT length claims {claimed / 2**20:.0f} MB",
                2,
                _claimed_length(small, b"IDAT", claimed),
                also_v2=claimed == 1 << 28,
            )
        )
    for kind in (b"tEXt", b"zTXt", b"iCCP", b"eXIf", b"PLTE", b"sPLT", b"abCd", b"fcTL"):
        cases.append(
            _image(
                f"PNG {kind.decode()} length claims 768 MB",
                2,
                _with_chunk(small, kind, b"k\x00\x00data", claimed=768 << 20),
            )
        )
    cases.append(
        _image(
            "PNG IHDR length claims 1 GB", 2, small[:8] + struct.pack(">I", 1 << 30) + small[12:]
        )
    )
    tiny_tiff = tiff(16, 16, _deflated_zero_rows(16, 16, 1))
    cases += [
        _image(
            "TIFF strip byte count claims 4 GB",
            2,
            tiny_tiff.replace(
                struct.pack("<HHII", 279, 4, 1, len(_deflated_zero_rows(16, 16, 1))),
                struct.pack("<HHII", 279, 4, 1, 0xFFFFFFF0),
            ),
        ),
        _image(
            "TIFF colour map count claims 2^30 entries",
            2,
            tiff(16, 16, _deflated_zero_rows(16, 16, 1), extra=((320, 3, 1 << 30, 8),)),
        ),
        _image(
            "TIFF ICC profile count claims 1 GB",
            2,
            tiff(16, 16, _deflated_zero_rows(16, 16, 1), extra=((34675, 7, 1 << 30, 8),)),
        ),
        _image(
            "TIFF strip count claims 2^28 strips",
            2,
            tiff(16, 16, _deflated_zero_rows(16, 16, 1), rows_per_strip=1).replace(
                struct.pack("<HHI", 273, 4, 16), struct.pack("<HHI", 273, 4, 1 << 28)
            ),
        ),
    ]
    bmp = photo("bmp")
    cases += [
        _image("BMP colours-used claims 2^30", 2, bmp[:46] + struct.pack("<I", 1 << 30) + bmp[50:]),
        _image(
            "BMP pixel offset claims 4 GB", 2, bmp[:10] + struct.pack("<I", 0xFFFFFF00) + bmp[14:]
        ),
        _image(
            "BMP image size claims 4 GB", 2, bmp[:34] + struct.pack("<I", 0xFFFFFF00) + bmp[38:]
        ),
        _image("BMP header size claims 1 GB", 2, bmp[:14] + struct.pack("<I", 1 << 30) + bmp[18:]),
    ]
    webp = photo("webp")
    cases += [
        _image(
            "WebP RIFF size claims 4 GB", 2, webp[:4] + struct.pack("<I", 0xFFFFFFF0) + webp[8:]
        ),
        _image(
            "WebP VP8 chunk size claims 1 GB", 2, webp[:16] + struct.pack("<I", 1 << 30) + webp[20:]
        ),
    ]
    jpeg = photo("jpeg")
    cases.append(_image("JPEG APP0 length claims 64 KB", 2, jpeg[:4] + b"\xff\xff" + jpeg[6:]))
    gif_data = photo("gif")
    cases.append(
        _image(
            "GIF colour table flag claims 256 colours", 2, gif_data[:10] + b"\xf7" + gif_data[11:]
        )
    )
    return cases


def class3_dimension_lies() -> list[HostileCase]:
    """Headers that look small to the pixel check while the decoder produces a huge image."""
    rows = _deflated_zero_rows(LIE_SIDE, 16, 1)
    cases = [
        _image(
            "JPEG hidden frame header: 16x16 outside, 10000x10000 inside",
            3,
            hidden_frame_jpeg(LIE_SIDE, LIE_SIDE),
            also_v2=True,
        ),
        _image(
            "JPEG hidden frame header: 16x16 outside, 7071x7071 grey inside",
            3,
            hidden_frame_jpeg(7071, 7071),
        ),
        _image(
            "JPEG with two frame headers (small, then 10000x10000)",
            3,
            b"\xff\xd8" + _sof(0xC0, 16, 16) + flat_jpeg(LIE_SIDE, LIE_SIDE)[2:],
        ),
        _image(
            "TIFF duplicate width/height tags: 10000 first, 16 second",
            3,
            tiff(
                LIE_SIDE,
                LIE_SIDE,
                rows,
                rows_per_strip=16,
                extra=((256, 4, 1, 16), (257, 4, 1, 16)),
            ),
            also_v2=True,
        ),
        _image(
            "TIFF duplicate width/height tags: 16 first, 10000 second",
            3,
            tiff(
                LIE_SIDE,
                LIE_SIDE,
                rows,
                rows_per_strip=16,
                prefix=((256, 4, 1, 16), (257, 4, 1, 16)),
            ),
        ),
        _image(
            "TIFF width as an 8-byte LONG8 value",
            3,
            tiff(
                LIE_SIDE, LIE_SIDE, rows, rows_per_strip=16, drop=(256,), extra=((256, 16, 1, 8),)
            ),
        ),
        _image(
            "TIFF width as a BYTE with 10000 in its value field",
            3,
            tiff(
                LIE_SIDE,
                LIE_SIDE,
                rows,
                rows_per_strip=16,
                drop=(256,),
                extra=((256, 1, 1, LIE_SIDE),),
            ),
        ),
        _image(
            "GIF 16x16 screen, 10000x10000 frame",
            3,
            gif((16, 16), (0, 0, LIE_SIDE, LIE_SIDE), b"\x84\x01\x00"),
        ),
        _image(
            "GIF 16x16 screen, frame at offset 60000",
            3,
            gif((16, 16), (60000, 60000, 16, 16), b"\x84\x01\x00"),
        ),
        _image(
            "WebP VP8X canvas 16x16 around a 10000x10000 bitstream",
            3,
            webp_canvas_lie((16, 16), _webp_lossless_flat(LIE_SIDE, LIE_SIDE)),
        ),
        _image(
            "WebP VP8X canvas 16000x16000 around a 16x16 bitstream",
            3,
            webp_canvas_lie((16000, 16000), photo("webp")),
        ),
        _image(
            "BMP negative width -10000",
            3,
            bmp_rle(-LIE_SIDE, LIE_SIDE, b"\x00\x01"),
        ),
    ]
    # Each declares (somewhere) more than MAX_IMAGE_PIXELS: the answer must be a refusal,
    # except where a decoder may fairly render only the small canvas.
    tolerant = ("frame at offset", "as a BYTE", "LONG8")
    return [
        case
        if any(word in case.name for word in tolerant)
        else replace(case, statuses=CLIENT_ERRORS)
        for case in cases
    ]


def class4_time_bombs() -> list[HostileCase]:
    """Files that cost seconds or minutes of CPU to decode."""
    (animated,) = [seed.data for seed in seeds("png") if seed.name == "animated"]
    return [
        _image("progressive JPEG 4000x4000, 500 scans", 4, scan_bomb_jpeg(4000, 4000, 500)),
        _image(
            "progressive JPEG 7000x7000, 2000 scans",
            4,
            scan_bomb_jpeg(LIMIT_SIDE, LIMIT_SIDE, 2000),
        ),
        _image(
            "progressive JPEG 7000x7000 colour, 6000 scans (100 KB)",
            4,
            scan_bomb_jpeg(LIMIT_SIDE, LIMIT_SIDE, 6000, 3),
        ),
        _image(
            "GIF with 20000 frames", 4, gif((64, 64), (0, 0, 64, 64), b"\x84\x01\x00", frames=20000)
        ),
        _image(
            "PNG with 50000 ancillary chunks",
            4,
            photo("png")[:33] + png_chunk(b"tEXt", b"k\x00v") * 50000 + photo("png")[33:],
        ),
        _image(
            "APNG with 3000 frames",
            4,
            _many_frame_apng(animated, 3000),
        ),
        _image("TIFF with an IFD chain that loops", 4, _tiff_loop(photo("tiff"))),
    ]


def _many_frame_apng(animated: bytes, frames: int) -> bytes:
    chunks = [(kind, payload) for _, kind, payload in png_chunks(animated)]
    head = [
        (kind, payload)
        for kind, payload in chunks
        if kind not in (b"fcTL", b"fdAT", b"IDAT", b"IEND", b"acTL")
    ]
    first_control = next(payload for kind, payload in chunks if kind == b"fcTL")
    idat = next(payload for kind, payload in chunks if kind == b"IDAT")
    body = [(b"acTL", struct.pack(">II", frames, 0)), *head[1:]]
    sequence = 0
    out = [(b"fcTL", struct.pack(">I", sequence) + first_control[4:]), (b"IDAT", idat)]
    for _ in range(frames - 1):
        sequence += 1
        out.append((b"fcTL", struct.pack(">I", sequence) + first_control[4:]))
        sequence += 1
        out.append((b"fdAT", struct.pack(">I", sequence) + idat))
    all_chunks = [head[0], *body, *out, (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, payload) for kind, payload in all_chunks)


def _tiff_loop(data: bytes) -> bytes:
    offset = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[offset : offset + 2])[0]
    position = offset + 2 + 12 * count
    return data[:position] + struct.pack("<I", offset) + data[position + 4 :]


def class5_expanding() -> list[HostileCase]:
    """Small files that decode to an image at the pixel limit (49 MP)."""
    side = LIMIT_SIDE
    palette = png_chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff")
    rle_end = b"\x00\x01"  # RLE: end of bitmap at once; the decoder fills the rest
    return [
        _image(
            "PNG 1-bit palette at the pixel limit",
            5,
            lambda: _png(side, side, 1, 3, _zero_rows(side, side, -(-side // 8)), palette),
            also_v2=True,
        ),
        _image(
            "PNG 8-bit grey at the pixel limit",
            5,
            lambda: _png(side, side, 8, 0, _zero_rows(side, side, side)),
        ),
        _image(
            "PNG 16-bit RGB 4096x4096",
            5,
            lambda: _png(4096, 4096, 16, 2, _zero_rows(4096, 4096, 6 * 4096)),
        ),
        _image(
            "PNG 256-colour palette with full tRNS at the pixel limit",
            5,
            lambda: _png(
                side,
                side,
                8,
                3,
                _zero_rows(side, side, side),
                png_chunk(b"PLTE", bytes(768)),
                png_chunk(b"tRNS", bytes(256)),
            ),
        ),
        _image(
            "GIF at the pixel limit (LZW data cut short)",
            5,
            gif((side, side), (0, 0, side, side), b"\x84\x01\x00"),
        ),
        _image("WebP lossless at the pixel limit", 5, _webp_lossless_flat(side, side)),
        _image("BMP RLE8 at the pixel limit, ends at once", 5, bmp_rle(side, side, rle_end)),
        _image(
            "BMP RLE4 at the pixel limit, ends at once", 5, bmp_rle(side, side, rle_end, bits=4)
        ),
        _image("BMP 8-bit palette claiming 2^24 colours at 4000x4000", 5, _bmp_palette_claim()),
        _image(
            "TIFF deflate RGB at the pixel limit, one shared strip",
            5,
            tiff(side, side, _deflated_zero_rows(side, 50, 3), samples=3, rows_per_strip=50),
        ),
        _image("JPEG baseline 7000x7000 grey in 200 bytes", 5, flat_jpeg(side, side)),
        _image("JPEG baseline colour 7000x7000 in 200 bytes", 5, flat_jpeg(side, side, 3)),
        _image(
            "JPEG progressive colour at the pixel limit", 5, progressive_flat_jpeg(side, side, 3)
        ),
        _image("JPEG progressive 747x65535 grey strip", 5, progressive_flat_jpeg(747, 65535, 1)),
    ]


def _bmp_palette_claim() -> bytes:
    width = height = 4000
    rows = bytes(width * height)
    offset = 14 + 40 + 1024
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, len(rows), 0, 0, 1 << 24, 0)
    return (
        b"BM"
        + struct.pack("<IHHI", offset + len(rows), 0, 0, offset)
        + info
        + bytes(1024)
        + rows[:2000]
    )


# --- HTTP: malformed requests (class 7) and chunked bodies past the limit (class 8) ----------


def _raw_request(
    path: str,
    body: bytes,
    *,
    content_type: str = "image/png",
    chunked: bool = True,
    extra_headers: str = "",
) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(body)}\r\n"
    head += extra_headers + "Connection: close\r\n\r\n"
    return head.encode() + body


def _chunks(data: bytes, size: int) -> bytes:
    return (
        b"".join(
            f"{len(data[i : i + size]):x}\r\n".encode() + data[i : i + size] + b"\r\n"
            for i in range(0, len(data), size)
        )
        + b"0\r\n\r\n"
    )


def class7_malformed_requests() -> list[HostileCase]:
    """Requests the HTTP and /v2 parsers must refuse with a 4xx, not a 500."""
    png = photo("png")
    bad_chunked = {
        "chunk size that is not hex": b"zz\r\n" + png + b"\r\n0\r\n\r\n",
        "negative chunk size": b"-5\r\nhello\r\n0\r\n\r\n",
        "chunk size with 0x prefix": b"0x10\r\n" + png[:16] + b"\r\n0\r\n\r\n",
        "chunk size of 20 hex digits": b"ffffffffffffffffffff\r\n" + png + b"\r\n0\r\n\r\n",
        "chunk data without its CRLF": f"{len(png):x}\r\n".encode() + png + b"0\r\n\r\n",
        "chunk longer than its size": b"4\r\n" + png[:64] + b"\r\n0\r\n\r\n",
        "60 KB chunk extension": b"10;" + b"x" * 60_000 + b"\r\n" + png[:16] + b"\r\n0\r\n\r\n",
        "chunk size line with a space": b"1 0\r\n" + png[:16] + b"\r\n0\r\n\r\n",
        "bare LF line endings": f"{len(png):x}\n".encode() + png + b"\n0\n\n",
        "malformed trailer": _chunks(png, 4096)[:-2] + b"not a header line\r\n\r\n",
        "body ends inside a chunk": f"{len(png) + 1000:x}\r\n".encode() + png,
        "no final chunk": f"{len(png):x}\r\n".encode() + png + b"\r\n",
    }
    cases = [
        HostileCase(f"chunked: {name}", 7, raw=_raw_request("/predict", body))
        for name, body in bad_chunked.items()
    ]
    cases.append(
        HostileCase(
            "chunked: bad chunk size to /v2",
            7,
            raw=_raw_request(V2_INFER, b"zz\r\n{}\r\n0\r\n\r\n", content_type="application/json"),
        )
    )
    cases.append(
        HostileCase(
            "chunked and Content-Length together",
            7,
            raw=_raw_request(
                "/predict", _chunks(png, 4096), extra_headers=f"Content-Length: {len(png)}\r\n"
            ),
        )
    )

    def v2(name: str, header: object, **options: object) -> HostileCase:
        body = options.pop("body", None)
        if body is None:
            body = json.dumps(header).encode()
        return HostileCase(
            f"/v2: {name}",
            7,
            body=body,
            content_type="application/json",
            path=V2_INFER,
            **options,  # type: ignore[arg-type]
        )

    def tensor(
        shape: object, data: object = None, datatype: str = "UINT8", **extra: object
    ) -> dict[str, object]:
        raw: dict[str, object] = {"name": "image", "shape": shape, "datatype": datatype}
        if data is not None:
            raw["data"] = data
        raw.update(extra)
        return {"inputs": [raw]}

    deep = 100_000
    cases += [
        v2(
            "data nested 100,000 deep",
            None,
            body=b'{"inputs": [{"name": "image", "shape": [1], "datatype": "UINT8", "data": '
            + b"[" * deep
            + b"]" * deep
            + b"}]}",
        ),
        v2(
            "parameters nested 100,000 deep",
            None,
            body=b'{"parameters": ' + b'{"a": ' * deep + b"1" + b"}" * deep + b', "inputs": []}',
        ),
        v2(
            "data nested 900 deep",
            None,
            body=b'{"inputs": [{"name": "image", "shape": [1], "datatype": "UINT8", "data": '
            + b"[" * 900
            + b"]" * 900
            + b"}]}",
        ),
        v2("shape whose product overflows int64", tensor([2**62, 2**62, 4], [0])),
        v2("shape with 65 dimensions", tensor([1] * 65, [0])),
        v2("shape with 33 dimensions", tensor([1] * 33, [0])),
        v2("shape of 10^400", tensor([10**400], [0])),
        v2("shape of 2^40 images", tensor([2**40, 64, 64, 3], [0])),
        v2("negative shape", tensor([-1, 64, 64, 3], [0])),
        v2("fractional shape", tensor([1.5, 64, 64, 3], [0])),
        v2("boolean shape", tensor([True, True], [0, 1])),
        v2("unknown datatype", tensor([1], [0], datatype="FP128")),
        v2("data of 1e400", tensor([1, 1, 1, 1], [1e400], datatype="FP32")),
        v2(
            "binary_data_size of 2^70",
            tensor([1, 64, 64, 3], parameters={"binary_data_size": 2**70}),
        ),
        v2("parameters as a list", {"inputs": [], "parameters": []}),
        v2("inputs as an object", {"inputs": {"name": "image"}}),
        v2(
            "10,000 inputs",
            {
                "inputs": [{"name": "image", "shape": [1], "datatype": "UINT8", "data": [0]}]
                * 10_000
            },
        ),
        v2(
            "outputs as a string",
            {"inputs": [tensor([1, 64, 64, 3], [0] * 12288)["inputs"][0]], "outputs": "all"},
        ),  # type: ignore[index]
        v2("id as an object", {"id": {"a": 1}, "inputs": []}),
        v2("body not UTF-8", None, body=b'{"inputs": "\xff\xfe"}'),
        v2(
            "NaN in data",
            None,
            body=b'{"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", '
            b'"data": [NaN]}]}',
        ),
        v2("JSON of 2 MB of spaces", None, body=b" " * 2_000_000 + b"{}"),
    ]
    bytes_body = json.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    for label, value in (
        ("non-ASCII digits", "١٢"),
        ("a superscript digit", "²"),
        ("a negative number", "-5"),
        ("2^70", str(2**70)),
    ):
        cases.append(
            HostileCase(
                f"/v2: Inference-Header-Content-Length of {label}",
                7,
                body=bytes_body + b"\xff\xff\xff\xff" + b"abcd",
                content_type="application/octet-stream",
                path=V2_INFER,
                headers=(("Inference-Header-Content-Length", value),),
            )
        )
    cases.append(
        HostileCase(
            "/v2: BYTES length prefix claims 4 GB",
            7,
            body=bytes_body + b"\xff\xff\xff\xff" + b"abcd",
            content_type="application/octet-stream",
            path=V2_INFER,
            headers=(("Inference-Header-Content-Length", str(len(bytes_body))),),
        )
    )
    return cases


def _padded_png(extra: int) -> bytes:
    return photo("png") + bytes(extra)


def _big_valid_png() -> bytes:
    """A real 2048x2048 noise PNG of about 12.6 MB: over the 10 MB limit, every byte needed."""
    noise = np.random.default_rng(1).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", noise, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    assert ok
    return encoded.tobytes()


def class8_chunked_over_limit() -> list[HostileCase]:
    """Chunked bodies past MAX_UPLOAD_BYTES (10 MB) must get a 413, not a cut body."""
    big = 24 << 20
    too_large = frozenset({413})
    return [
        HostileCase(
            "chunked: 24 MB image/png body",
            8,
            raw=lambda: _raw_request("/predict", _chunks(_padded_png(big), 1 << 20)),
            statuses=too_large,
        ),
        HostileCase(
            "chunked: valid 12.6 MB PNG",
            8,
            raw=lambda: _raw_request("/predict", _chunks(_big_valid_png(), 1 << 16)),
            statuses=too_large,
        ),
        HostileCase(
            "chunked: 24 MB multipart upload",
            8,
            raw=lambda: _raw_request(
                "/predict", _chunks(_multipart(_padded_png(big)), 1 << 20), content_type=MULTIPART
            ),
            statuses=too_large,
        ),
        HostileCase(
            "chunked: 24 MB /v2 body",
            8,
            raw=lambda: _raw_request(
                V2_INFER,
                _chunks(b"{" + b" " * big + b"}", 1 << 20),
                content_type="application/json",
            ),
            statuses=too_large,
        ),
        HostileCase(
            "chunked: 12 MB in 4 KB chunks",
            8,
            raw=lambda: _raw_request("/predict", _chunks(_padded_png(12 << 20), 4096)),
            statuses=too_large,
        ),
        HostileCase(
            "Content-Length: 24 MB body (control)",
            8,
            raw=lambda: _raw_request("/predict", _padded_png(big), chunked=False),
            statuses=too_large,
        ),
    ]


@cache
def hostile_cases() -> tuple[HostileCase, ...]:
    """Every case; the slow decode-time bombs come last (they may keep a worker busy)."""
    return (
        *class1_malformed(),
        *corpus_cases(),
        *class2_declared_lengths(),
        *class3_dimension_lies(),
        *class5_expanding(),
        *class7_malformed_requests(),
        *class8_chunked_over_limit(),
        *class4_time_bombs(),
    )


def hostile_case(name: str) -> HostileCase:
    """Return the case with this name."""
    (case,) = [case for case in hostile_cases() if case.name == name]
    return case
