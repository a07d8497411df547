"""Image bytes to a model-ready RGB uint8 array: sniff, guard, decode, orient, resize."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from onemodel.errors import InvalidImageError, TooManyPixelsError, UnsupportedMediaTypeError

FORMATS = ("jpeg", "png", "gif", "bmp", "webp", "tiff")
_NEEDS_TOO_MUCH_MEMORY = (
    "the {} image could not be decoded within the decode memory limit (send a smaller image)"
)

# OpenCV decodes JPEG at 1/2, 1/4 or 1/8 scale almost for free (the IDCT is skipped).
_REDUCED_JPEG_FLAGS = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)


def sniff_format(data: bytes) -> str:
    """Return the image format from the file's magic bytes, or raise UnsupportedMediaTypeError."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    raise UnsupportedMediaTypeError(
        "the upload is not a supported image (JPEG, PNG, GIF, BMP, WebP or TIFF)"
    )


def read_dimensions(data: bytes, image_format: str) -> tuple[int, int]:
    """Return (width, height) from the image header, without decoding pixels."""
    try:
        width, height = _HEADER_READERS[image_format](data)
    except (struct.error, IndexError, ValueError):
        raise InvalidImageError(
            f"the {image_format.upper()} header is truncated or corrupt"
        ) from None
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"the {image_format.upper()} header declares an empty image")
    return width, height


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse images with more than max_pixels pixels (a decompression-bomb guard)."""
    if width * height > max_pixels:
        raise TooManyPixelsError(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )


def decode_image(
    data: bytes, max_pixels: int, min_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (H, W, 3), EXIF orientation applied.

    Grayscale becomes 3 channels, alpha is dropped, 16-bit becomes 8-bit, and an animated
    GIF gives its first frame. When ``min_size`` (height, width) is given, a large JPEG is
    decoded at a reduced scale that still covers it.
    """
    # OpenCV decodes to BGR; Keras models (and their preprocessing) expect RGB.
    return cv2.cvtColor(_decode_bgr(data, max_pixels, min_size), cv2.COLOR_BGR2RGB)


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width) as Keras's ``load_img(target_size=...)`` does: no crop.

    Shrinking uses area averaging (no aliasing); enlarging uses bilinear interpolation.
    """
    height, width = size
    if rgb.shape[:2] == (height, width):
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    shrinking = rgb.shape[0] * rgb.shape[1] > height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def prepare_image(data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Turn uploaded bytes into the model's input: RGB uint8 (height, width, 3)."""
    if not data:
        raise InvalidImageError("the upload is empty")
    # Resize before the colour swap (they commute): no second full-size copy of the image.
    bgr = resize_image(_decode_bgr(data, max_pixels, min_size=size), size)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_bgr(data: bytes, max_pixels: int, min_size: tuple[int, int] | None) -> np.ndarray:
    image_format = sniff_format(data)
    width, height = read_dimensions(data, image_format)
    check_pixels(width, height, max_pixels)
    flags = cv2.IMREAD_COLOR
    scale = 1
    if image_format == "jpeg" and min_size is not None:
        scale, flags = _reduced_jpeg_flag(width, height, min_size)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, flags)
    except cv2.error as error:
        # OpenCV checks OPENCV_IO_MAX_IMAGE_PIXELS on the size its own decoder read, which
        # can differ from what our header reader saw (a lying or ambiguous header).
        if "CV_IO_MAX_IMAGE_PIXELS" in str(error):
            raise TooManyPixelsError(
                f"the image decodes to more than {max_pixels} pixels, the limit"
            ) from None
        if "Insufficient memory" in str(error):
            raise InvalidImageError(_NEEDS_TOO_MUCH_MEMORY.format(image_format.upper())) from None
        bgr = None
    except MemoryError:
        raise InvalidImageError(_NEEDS_TOO_MUCH_MEMORY.format(image_format.upper())) from None
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.size == 0:
        raise InvalidImageError(f"the {image_format.upper()} data could not be decoded")
    # The limit holds for what the decoder produced, not for what the header claimed.
    # (A reduced decode rounds each side up: count the smallest size it can stand for.)
    decoded_height = bgr.shape[0] * scale - (scale - 1)
    decoded_width = bgr.shape[1] * scale - (scale - 1)
    if decoded_height * decoded_width > max_pixels:
        raise TooManyPixelsError(
            f"the image decodes to {decoded_width}x{decoded_height} = "
            f"{decoded_width * decoded_height} pixels; the limit is {max_pixels}"
        )
    return bgr


def _reduced_jpeg_flag(width: int, height: int, min_size: tuple[int, int]) -> tuple[int, int]:
    # EXIF rotation may swap the axes, so the shorter side must still cover the longer target.
    needed = max(min_size)
    shorter = min(width, height)
    for factor, flag in _REDUCED_JPEG_FLAGS:
        if shorter // factor >= needed:
            return factor, flag
    return 1, cv2.IMREAD_COLOR


def _png_dimensions(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise ValueError("no IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _gif_dimensions(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack("<HH", data[6:10])
    return width, height


def _bmp_dimensions(data: bytes) -> tuple[int, int]:
    header_size = struct.unpack("<I", data[14:18])[0]
    if header_size == 12:
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp_dimensions(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise ValueError("unknown WebP chunk")


def _jpeg_dimensions(data: bytes) -> tuple[int, int]:
    position = 2
    end = len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            raise ValueError("bad JPEG marker")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        # SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            break
        position += 2 + length
    raise ValueError("no JPEG frame header")


def _tiff_dimensions(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[offset : offset + 2])[0]
    found: dict[int, int] = {}
    for index in range(count):
        entry = offset + 2 + 12 * index
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257):
            if kind == 3:  # SHORT
                value = struct.unpack(order + "H", data[entry + 8 : entry + 10])[0]
            else:  # LONG
                value = struct.unpack(order + "I", data[entry + 8 : entry + 12])[0]
            found[tag] = value
    if 256 not in found or 257 not in found:
        raise ValueError("no TIFF width or height tag")
    return found[256], found[257]


_HEADER_READERS = {
    "jpeg": _jpeg_dimensions,
    "png": _png_dimensions,
    "gif": _gif_dimensions,
    "bmp": _bmp_dimensions,
    "webp": _webp_dimensions,
    "tiff": _tiff_dimensions,
}
