"""Byte and format-aware mutations of image files: lengths, chunk headers, markers, IFD entries.

Each mutator takes (data, rng) and returns (mutant, description), or None when the file has
nothing it can work on (then a generic byte mutation is used instead). Format-aware mutators
keep a file parseable where a lazy decoder would stop early: PNG chunk CRCs are recomputed,
JPEG segments stay framed, TIFF IFDs are rewritten whole.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Sequence

MAX_MUTANT_BYTES = 100_000  # findings are kept as regression files: keep them small

Mutator = Callable[[bytes, random.Random], "tuple[bytes, str] | None"]

_INTERESTING_32 = (
    0,
    1,
    2,
    3,
    7,
    8,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x3FFF,
    0x4000,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    7071,
    10000,
    16384,
    50000,
    1 << 20,
    1 << 24,
    1 << 28,
    1 << 30,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFE,
    0xFFFFFFFF,
)
_INTERESTING_16 = tuple(value for value in _INTERESTING_32 if value <= 0xFFFF)


def _int32(rng: random.Random, old: int | None = None) -> int:
    if old is not None and rng.random() < 0.25:
        return (old + rng.choice((-1, 1, 2, -2, 8, old))) & 0xFFFFFFFF
    if rng.random() < 0.15:
        return rng.getrandbits(32)
    return rng.choice(_INTERESTING_32)


def _int16(rng: random.Random, old: int | None = None) -> int:
    if old is not None and rng.random() < 0.25:
        return (old + rng.choice((-1, 1, 2, -2, 8, old))) & 0xFFFF
    if rng.random() < 0.15:
        return rng.getrandbits(16)
    return rng.choice(_INTERESTING_16)


# --- generic byte mutations -------------------------------------------------------------


def flip_bits(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    if not data:
        return None
    out = bytearray(data)
    count = rng.choice((1, 1, 2, 4, 8))
    for _ in range(count):
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out), f"flip {count} bit(s)"


def set_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    if not data:
        return None
    out = bytearray(data)
    position = rng.randrange(len(out))
    value = rng.choice((0, 0xFF, 0x7F, 0x80, 1, rng.getrandbits(8)))
    out[position] = value
    return bytes(out), f"byte {position} = {value:#x}"


def set_int(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    width = rng.choice((2, 4))
    if len(data) < width:
        return None
    position = rng.randrange(len(data) - width + 1)
    order = rng.choice("<>")
    value = _int16(rng) if width == 2 else _int32(rng)
    packed = struct.pack(order + ("H" if width == 2 else "I"), value)
    return (
        data[:position] + packed + data[position + width :],
        f"{8 * width}-bit {'LE' if order == '<' else 'BE'} int at {position} = {value:#x}",
    )


def delete_range(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    if len(data) < 2:
        return None
    start = rng.randrange(len(data))
    length = min(rng.choice((1, 2, 4, 16, 64, 256)), len(data) - start)
    return data[:start] + data[start + length :], f"delete {length} bytes at {start}"


def duplicate_range(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    if not data:
        return None
    start = rng.randrange(len(data))
    length = min(rng.choice((1, 4, 16, 64, 256, 1024)), len(data) - start)
    times = rng.choice((1, 2, 8, 64))
    piece = data[start : start + length]
    return (
        data[: start + length] + piece * times + data[start + length :],
        f"repeat {length} bytes at {start} x{times}",
    )


def insert_random(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    position = rng.randrange(len(data) + 1)
    length = rng.choice((1, 2, 4, 16, 128))
    return (
        data[:position] + rng.randbytes(length) + data[position:],
        f"insert {length} random bytes at {position}",
    )


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    if len(data) < 2:
        return None
    end = rng.randrange(1, len(data))
    return data[:end], f"truncate to {end} bytes"


GENERIC: tuple[Mutator, ...] = (
    flip_bits,
    set_bytes,
    set_int,
    delete_range,
    duplicate_range,
    insert_random,
    truncate,
)


# --- PNG ---------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_EXTRA_CHUNKS = (
    b"acTL",
    b"fcTL",
    b"fdAT",
    b"PLTE",
    b"tRNS",
    b"iCCP",
    b"zTXt",
    b"iTXt",
    b"sBIT",
    b"bKGD",
    b"hIST",
    b"sPLT",
    b"eXIf",
    b"cICP",
    b"IDAT",
    b"IEND",
)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """Return one PNG chunk with its length and a correct CRC."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Return (offset, type, payload) of each well-framed chunk, stopping at the first bad one."""
    chunks = []
    position = len(_PNG_SIGNATURE)
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        if position + 12 + length > len(data):
            break
        kind = data[position + 4 : position + 8]
        chunks.append((position, kind, data[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def _png_rebuild(data: bytes, chunks: Sequence[tuple[bytes, bytes]]) -> bytes:
    end = _png_end(data)
    return (
        _PNG_SIGNATURE
        + b"".join(png_chunk(kind, payload) for kind, payload in chunks)
        + (data[end:])
    )


def _png_end(data: bytes) -> int:
    chunks = png_chunks(data)
    if not chunks:
        return len(_PNG_SIGNATURE)
    offset, _, payload = chunks[-1]
    return offset + 12 + len(payload)


def png_chunk_length(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    chunks = png_chunks(data)
    if not chunks:
        return None
    offset, kind, payload = rng.choice(chunks)
    value = _int32(rng, len(payload))
    mutant = data[:offset] + struct.pack(">I", value) + data[offset + 4 :]
    return mutant, f"PNG {kind.decode('latin-1')} length {len(payload)} -> {value:#x}"


def png_chunk_payload(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    chunks = png_chunks(data)
    if not chunks:
        return None
    index = rng.randrange(len(chunks))
    kind = chunks[index][1]
    payload = chunks[index][2]
    if kind == b"IHDR" or (kind in (b"fcTL", b"acTL") and rng.random() < 0.7):
        fields = {b"IHDR": ">IIBBBBB", b"acTL": ">II", b"fcTL": ">IIIIIHHBB"}[kind]
        if len(payload) != struct.calcsize(fields):
            return None
        values = list(struct.unpack(fields, payload))
        field = rng.randrange(len(values))
        size = struct.calcsize(">" + fields[1 + field])
        if size == 4:
            values[field] = _int32(rng, values[field])
        elif size == 2:
            values[field] = _int16(rng, values[field])
        else:
            values[field] = rng.choice((0, 1, 2, 3, 4, 6, 8, 16, 255, rng.getrandbits(8)))
        new_payload = struct.pack(fields, *values)
        what = f"field {field} = {values[field]:#x}"
    else:
        if not payload:
            return None
        mutated = generic_mutation(payload, rng)
        new_payload, what = mutated
    rebuilt = [(kind_, payload_) for _, kind_, payload_ in chunks]
    rebuilt[index] = (kind, new_payload)
    return _png_rebuild(data, rebuilt), f"PNG {kind.decode('latin-1')} {what} (CRC fixed)"


def png_chunk_order(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    chunks = [(kind, payload) for _, kind, payload in png_chunks(data)]
    if len(chunks) < 2:
        return None
    index = rng.randrange(len(chunks))
    action = rng.choice(("duplicate", "remove", "swap", "insert"))
    if action == "duplicate":
        times = rng.choice((1, 2, 16, 200))
        chunks[index + 1 : index + 1] = [chunks[index]] * times
        what = f"duplicate {chunks[index][0].decode('latin-1')} x{times}"
    elif action == "remove":
        what = f"remove {chunks[index][0].decode('latin-1')}"
        del chunks[index]
    elif action == "swap":
        other = rng.randrange(len(chunks))
        chunks[index], chunks[other] = chunks[other], chunks[index]
        what = f"swap chunks {index} and {other}"
    else:
        kind = rng.choice(_PNG_EXTRA_CHUNKS)
        length = rng.choice((0, 1, 4, 8, 13, 26, 64, 768, 1024))
        payload = _png_payload(kind, length, rng)
        chunks.insert(max(1, index), (kind, payload))
        what = f"insert {kind.decode('latin-1')} of {len(payload)} bytes"
    return _png_rebuild(data, chunks), f"PNG {what}"


def _png_payload(kind: bytes, length: int, rng: random.Random) -> bytes:
    if kind == b"acTL":
        return struct.pack(">II", _int32(rng), rng.choice((0, 1, 2)))
    if kind == b"fcTL":
        return struct.pack(
            ">IIIIIHHBB",
            rng.choice((0, 1, 2)),
            _int32(rng),
            _int32(rng),
            _int32(rng),
            _int32(rng),
            1,
            10,
            rng.randrange(4),
            rng.randrange(3),
        )
    if kind in (b"zTXt", b"iCCP"):
        return b"k\x00\x00" + zlib.compress(bytes(rng.choice((length, 1 << 20))))
    if kind in (b"IDAT", b"fdAT"):
        prefix = struct.pack(">I", rng.randrange(4)) if kind == b"fdAT" else b""
        return prefix + zlib.compress(bytes(rng.choice((length, 1 << 16, 1 << 20))))
    return rng.randbytes(length)


# --- JPEG --------------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """Return (offset, marker, segment end) of each marker segment, scan data included in SOS."""
    segments = []
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            segments.append((position, marker, position + 2))
            position += 2
            continue
        if marker == 0xD9:
            segments.append((position, marker, position + 2))
            break
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        end = position + 2 + length
        if end > len(data):
            break
        if marker == 0xDA:  # the entropy-coded data runs to the next non-RST marker
            while end + 1 < len(data):
                if data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8)):
                    break
                end += 1
        segments.append((position, marker, end))
        position = end
    return segments


def jpeg_segment_length(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    segments = [segment for segment in jpeg_segments(data) if segment[2] - segment[0] > 2]
    if not segments:
        return None
    offset, marker, _ = rng.choice(segments)
    (old,) = struct.unpack(">H", data[offset + 2 : offset + 4])
    value = _int16(rng, old)
    mutant = data[: offset + 2] + struct.pack(">H", value) + data[offset + 4 :]
    return mutant, f"JPEG marker {marker:#04x} length {old} -> {value}"


def jpeg_header_field(  # noqa: PLR0911, PLR0912 (one branch per header field)
    data: bytes, rng: random.Random
) -> tuple[bytes, str] | None:
    """Change a field of a frame (SOF), scan (SOS), table or restart header in place."""
    segments = [
        segment
        for segment in jpeg_segments(data)
        if 0xC0 <= segment[1] <= 0xCF or segment[1] in (0xDA, 0xDB, 0xDD)
    ]
    if not segments:
        return None
    offset, marker, _ = rng.choice(segments)
    out = bytearray(data)
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF
        choice = rng.choice(("height", "width", "precision", "components", "sampling", "table"))
        if choice in ("height", "width"):
            position = offset + (5 if choice == "height" else 7)
            value = rng.choice((0, 1, 8, 255, 4096, 7000, 7071, 10000, 16384, 65500, 65535))
            out[position : position + 2] = struct.pack(">H", value)
            return bytes(out), f"JPEG SOF {choice} = {value}"
        if choice == "precision":
            out[offset + 4] = rng.choice((0, 2, 8, 12, 16, 255))
            return bytes(out), f"JPEG SOF precision = {out[offset + 4]}"
        if choice == "components":
            out[offset + 9] = rng.choice((0, 1, 2, 3, 4, 5, 255))
            return bytes(out), f"JPEG SOF component count = {out[offset + 9]}"
        component = (
            offset
            + 10
            + 3 * rng.randrange(max(1, data[offset + 9] if offset + 9 < len(data) else 1))
        )
        if component + 2 >= len(out):
            return None
        if choice == "sampling":
            out[component + 1] = rng.choice((0x11, 0x22, 0x44, 0x41, 0x14, 0x00, 0xFF, 0x33))
            return bytes(out), f"JPEG SOF sampling = {out[component + 1]:#04x}"
        out[component + 2] = rng.choice((0, 1, 2, 3, 4, 255))
        return bytes(out), f"JPEG SOF quantization table = {out[component + 2]}"
    if marker == 0xDA:  # SOS: Ns, then (id, tables) per component, then Ss, Se, Ah/Al
        count = data[offset + 4]
        tail = offset + 5 + 2 * count
        if tail + 2 >= len(out):
            return None
        choice = rng.choice(("count", "tables", "Ss", "Se", "AhAl"))
        if choice == "count":
            out[offset + 4] = rng.choice((0, 1, 2, 3, 4, 5, 255))
        elif choice == "tables" and count:
            out[offset + 6 + 2 * rng.randrange(count)] = rng.choice((0x00, 0x11, 0x44, 0xFF))
        elif choice == "Ss":
            out[tail] = rng.choice((0, 1, 63, 64, 255))
        elif choice == "Se":
            out[tail + 1] = rng.choice((0, 1, 63, 64, 255))
        else:
            out[tail + 2] = rng.choice((0x00, 0x01, 0x10, 0x21, 0xDD, 0xFF, 0x0D))
        return bytes(out), f"JPEG SOS {choice} changed"
    if marker == 0xDD and offset + 6 <= len(out):  # DRI: restart interval
        value = _int16(rng)
        out[offset + 4 : offset + 6] = struct.pack(">H", value)
        return bytes(out), f"JPEG DRI interval = {value}"
    if offset + 5 <= len(out):  # DQT: precision and table id
        out[offset + 4] = rng.choice((0x00, 0x01, 0x10, 0x04, 0xFF))
        return bytes(out), f"JPEG DQT Pq/Tq = {out[offset + 4]:#04x}"
    return None


def jpeg_huffman_counts(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    segments = [segment for segment in jpeg_segments(data) if segment[1] == 0xC4]
    if not segments:
        return None
    offset, _, end = rng.choice(segments)
    if offset + 21 > end:
        return None
    out = bytearray(data)
    position = offset + 5 + rng.randrange(16)
    out[position] = rng.choice((0, 1, 2, 16, 255, rng.getrandbits(8)))
    return bytes(out), f"JPEG DHT code count {position - offset - 5} = {out[position]}"


def jpeg_scan_copies(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    """Repeat a scan (header and data) many times: progressive decoders redo work per scan."""
    segments = [segment for segment in jpeg_segments(data) if segment[1] == 0xDA]
    if not segments:
        return None
    offset, _, end = rng.choice(segments)
    scan = data[offset:end]
    times = rng.choice((2, 10, 100, 1000))
    times = min(times, max(1, (MAX_MUTANT_BYTES - len(data)) // max(len(scan), 1)))
    return data[:end] + scan * times + data[end:], f"JPEG repeat a {len(scan)}-byte scan x{times}"


def jpeg_insert_segment(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    segments = jpeg_segments(data)
    if not segments:
        return None
    offset = rng.choice(segments)[0]
    kind = rng.choice(("APP", "COM", "DRI", "DNL", "SOF", "DHT", "EOI", "SOS"))
    if kind == "APP":
        marker, payload = 0xE0 + rng.randrange(16), rng.randbytes(rng.choice((0, 4, 64)))
    elif kind == "COM":
        marker, payload = 0xFE, b"x" * rng.choice((0, 10, 1000))
    elif kind == "DRI":
        marker, payload = 0xDD, struct.pack(">H", _int16(rng))
    elif kind == "DNL":
        marker, payload = 0xDC, struct.pack(">H", _int16(rng))
    elif kind == "SOF":
        marker = rng.choice((0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA))
        payload = struct.pack(">BHHB", 8, _int16(rng), _int16(rng), 1) + b"\x01\x11\x00"
    elif kind == "DHT":
        marker, payload = 0xC4, b"\x00" + bytes(rng.getrandbits(4) for _ in range(16)) + b"\x00"
    elif kind == "EOI":
        return data[:offset] + b"\xff\xd9" + data[offset:], "JPEG insert EOI"
    else:
        marker, payload = 0xDA, b"\x01\x01\x00\x00\x3f\x00"
    segment = b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload
    return data[:offset] + segment + data[offset:], f"JPEG insert {kind} ({marker:#04x})"


def jpeg_remove_segment(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    segments = jpeg_segments(data)
    if not segments:
        return None
    offset, marker, end = rng.choice(segments)
    return data[:offset] + data[end:], f"JPEG remove marker {marker:#04x}"


# --- TIFF --------------------------------------------------------------------------------

_TIFF_TAGS = (
    256,  # ImageWidth
    257,  # ImageLength
    258,  # BitsPerSample
    259,  # Compression
    262,  # Photometric
    273,  # StripOffsets
    277,  # SamplesPerPixel
    278,  # RowsPerStrip
    279,  # StripByteCounts
    284,  # PlanarConfiguration
    317,  # Predictor
    320,  # ColorMap
    322,  # TileWidth
    323,  # TileLength
    324,  # TileOffsets
    325,  # TileByteCounts
    330,  # SubIFDs
    338,  # ExtraSamples
    339,  # SampleFormat
    347,  # JPEGTables
    530,  # YCbCrSubSampling
    34675,  # ICC profile
)
_TIFF_TYPES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18, 0, 255)


def tiff_ifd(data: bytes) -> tuple[str, int, list[list[int]], int] | None:
    """Return (byte order, IFD offset, entries [tag, type, count, value], next IFD offset)."""
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return None
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    if offset + 2 + 12 * count + 4 > len(data):
        return None
    entries = [
        list(struct.unpack(order + "HHII", data[offset + 2 + 12 * i : offset + 14 + 12 * i]))
        for i in range(count)
    ]
    (next_offset,) = struct.unpack(
        order + "I", data[offset + 2 + 12 * count : offset + 6 + 12 * count]
    )
    return order, offset, entries, next_offset


def _tiff_value_bytes(order: str, kind: int, value: int) -> int:
    # A SHORT value sits in the first two bytes of the value field, whatever the byte order.
    if kind == 3 and value <= 0xFFFF:
        return int(struct.unpack(order + "I", struct.pack(order + "HH", value, 0))[0])
    return value & 0xFFFFFFFF


def _tiff_rebuild(data: bytes, order: str, entries: list[list[int]], next_offset: int) -> bytes:
    """Append a new IFD with these entries and point the header at it (value offsets hold)."""
    base = data + b"\x00" * (len(data) % 2)
    ifd = struct.pack(order + "H", len(entries) & 0xFFFF)
    for tag, kind, count, value in entries:
        ifd += struct.pack(order + "HHII", tag, kind, count, value)
    ifd += struct.pack(order + "I", next_offset)
    return base[:4] + struct.pack(order + "I", len(base)) + base[8:] + ifd


def tiff_entry(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    parsed = tiff_ifd(data)
    if parsed is None or not parsed[2]:
        return None
    order, _, entries, next_offset = parsed
    index = rng.randrange(len(entries))
    entry = entries[index]
    tag = entry[0]
    choice = rng.choice(("value", "value", "value", "type", "count", "tag", "duplicate", "remove"))
    if choice == "value":
        value = _int16(rng) if entry[1] == 3 and rng.random() < 0.7 else _int32(rng)
        entry[3] = _tiff_value_bytes(order, entry[1], value)
        what = f"tag {tag} value = {value:#x}"
    elif choice == "type":
        entry[1] = rng.choice(_TIFF_TYPES)
        what = f"tag {tag} type = {entry[1]}"
    elif choice == "count":
        entry[2] = _int32(rng, entry[2])
        what = f"tag {tag} count = {entry[2]:#x}"
    elif choice == "tag":
        entry[0] = rng.choice(_TIFF_TAGS)
        what = f"tag {tag} -> {entry[0]}"
    elif choice == "duplicate":
        copy = list(entry)
        copy[3] = _tiff_value_bytes(order, copy[1], _int16(rng))
        entries.insert(index + rng.choice((0, 1)), copy)
        what = f"duplicate tag {tag} with value {copy[3]:#x}"
    else:
        del entries[index]
        what = f"remove tag {tag}"
    return _tiff_rebuild(data, order, entries, next_offset), f"TIFF {what}"


def tiff_structure(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    parsed = tiff_ifd(data)
    if parsed is None:
        return None
    order, offset, entries, next_offset = parsed
    choice = rng.choice(("loop", "next", "count", "new tag"))
    if choice == "loop":  # the next IFD is this one again
        position = offset + 2 + 12 * len(entries)
        return data[:position] + struct.pack(order + "I", offset) + data[position + 4 :], (
            "TIFF next IFD = itself"
        )
    if choice == "next":
        value = _int32(rng, next_offset)
        position = offset + 2 + 12 * len(entries)
        return data[:position] + struct.pack(order + "I", value) + data[position + 4 :], (
            f"TIFF next IFD = {value:#x}"
        )
    if choice == "count":
        value = _int16(rng, len(entries))
        return data[:offset] + struct.pack(order + "H", value) + data[offset + 2 :], (
            f"TIFF IFD entry count {len(entries)} -> {value}"
        )
    tag = rng.choice(_TIFF_TAGS)
    kind = rng.choice((3, 4))
    value = _int16(rng) if kind == 3 else _int32(rng)
    entries.append([tag, kind, 1, _tiff_value_bytes(order, kind, value)])
    entries.sort(key=lambda entry: entry[0])
    return _tiff_rebuild(data, order, entries, next_offset), f"TIFF add tag {tag} = {value:#x}"


# --- GIF ---------------------------------------------------------------------------------


def gif_blocks(data: bytes) -> list[tuple[str, int, int]]:
    """Return (kind, offset, end) of the screen descriptor, extensions, images and trailer."""
    if len(data) < 13:
        return []
    blocks = [("screen", 6, 13)]
    position = 13
    flags = data[10]
    if flags & 0x80:
        position += 3 << ((flags & 7) + 1)
    while position < len(data):
        introducer = data[position]
        if introducer == 0x3B:
            blocks.append(("trailer", position, position + 1))
            break
        start = position
        if introducer == 0x21:
            position += 2
            kind = "extension"
        elif introducer == 0x2C:
            if position + 10 > len(data):
                break
            image_flags = data[position + 9]
            position += 10
            if image_flags & 0x80:
                position += 3 << ((image_flags & 7) + 1)
            position += 1  # LZW minimum code size
            kind = "image"
        else:
            break
        while position < len(data) and data[position]:
            position += 1 + data[position]
        position += 1
        if position > len(data):
            break
        blocks.append((kind, start, position))
    return blocks


def gif_field(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:  # noqa: PLR0911
    blocks = [block for block in gif_blocks(data) if block[0] in ("screen", "image")]
    if not blocks:
        return None
    kind, offset, _ = rng.choice(blocks)
    out = bytearray(data)
    if kind == "screen":
        field = rng.choice(("width", "height", "flags"))
        if field == "flags":
            out[10] = rng.choice((0x00, 0x80, 0x87, 0xF7, 0xFF, rng.getrandbits(8)))
            return bytes(out), f"GIF screen flags = {out[10]:#04x}"
        value = _int16(rng)
        position = 6 if field == "width" else 8
        out[position : position + 2] = struct.pack("<H", value)
        return bytes(out), f"GIF screen {field} = {value}"
    field = rng.choice(("left", "top", "width", "height", "flags", "lzw"))
    if field == "flags":
        out[offset + 9] = rng.choice((0x00, 0x40, 0x80, 0x87, 0xC7, 0xFF))
        return bytes(out), f"GIF image flags = {out[offset + 9]:#04x}"
    if field == "lzw":
        flags = data[offset + 9]
        position = offset + 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
        if position >= len(out):
            return None
        out[position] = rng.choice((0, 1, 2, 8, 11, 12, 13, 255))
        return bytes(out), f"GIF LZW minimum code size = {out[position]}"
    position = offset + 1 + 2 * ("left", "top", "width", "height").index(field)
    value = _int16(rng)
    out[position : position + 2] = struct.pack("<H", value)
    return bytes(out), f"GIF image {field} = {value}"


def gif_frames(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    blocks = gif_blocks(data)
    images = [block for block in blocks if block[0] in ("image", "extension")]
    if not images:
        return None
    kind, offset, end = rng.choice(images)
    choice = rng.choice(("repeat", "remove", "sub-block"))
    if choice == "repeat":
        times = rng.choice((2, 50, 1000))
        times = min(times, max(1, (MAX_MUTANT_BYTES - len(data)) // max(end - offset, 1)))
        return data[:end] + data[offset:end] * times + data[end:], f"GIF repeat {kind} x{times}"
    if choice == "remove":
        return data[:offset] + data[end:], f"GIF remove {kind}"
    position = rng.randrange(offset, end)
    out = bytearray(data)
    out[position] = rng.choice((0, 1, 0xFF, rng.getrandbits(8)))
    return bytes(out), f"GIF {kind} byte {position - offset} = {out[position]}"


# --- BMP ---------------------------------------------------------------------------------

_BMP_FIELDS = (
    ("file size", 2, 4),
    ("pixel offset", 10, 4),
    ("header size", 14, 4),
    ("width", 18, 4),
    ("height", 22, 4),
    ("planes", 26, 2),
    ("bit count", 28, 2),
    ("compression", 30, 4),
    ("image size", 34, 4),
    ("colours used", 46, 4),
    ("important colours", 50, 4),
)


def bmp_field(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    name, position, size = rng.choice(_BMP_FIELDS)
    if position + size > len(data):
        return None
    if name == "bit count":
        value = rng.choice((0, 1, 2, 4, 8, 15, 16, 24, 32, 48, 64, 0xFFFF))
    elif name == "compression":
        value = rng.choice((0, 1, 2, 3, 4, 5, 6, 11, 0xFFFFFFFF))
    elif name == "header size":
        value = rng.choice((12, 16, 40, 52, 56, 64, 108, 124, 0, 0xFFFFFFFF))
    elif name in ("width", "height") and rng.random() < 0.3:
        value = rng.choice((-1, -7071, -(1 << 31), -16)) & 0xFFFFFFFF
    else:
        value = _int16(rng) if size == 2 else _int32(rng)
    packed = struct.pack("<H" if size == 2 else "<I", value)
    return data[:position] + packed + data[position + size :], f"BMP {name} = {value:#x}"


# --- WebP --------------------------------------------------------------------------------


def webp_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """Return (offset, fourcc, payload size) of each RIFF chunk after the WEBP tag."""
    chunks = []
    position = 12
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        (size,) = struct.unpack("<I", data[position + 4 : position + 8])
        chunks.append((position, kind, size))
        position += 8 + size + (size & 1)
        if kind == b"ANMF":  # frames nest their own chunks after a 16-byte header
            chunks.extend(_webp_nested(data, chunks[-1][0] + 24, position))
    return chunks


def _webp_nested(data: bytes, start: int, end: int) -> list[tuple[int, bytes, int]]:
    nested = []
    position = start
    while position + 8 <= min(end, len(data)):
        kind = data[position : position + 4]
        (size,) = struct.unpack("<I", data[position + 4 : position + 8])
        nested.append((position, kind, size))
        position += 8 + size + (size & 1)
    return nested


def webp_field(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:  # noqa: PLR0911
    chunks = webp_chunks(data)
    out = bytearray(data)
    if not chunks or rng.random() < 0.15:
        value = _int32(rng, len(data) - 8)
        out[4:8] = struct.pack("<I", value)
        return bytes(out), f"WebP RIFF size = {value:#x}"
    offset, kind, size = rng.choice(chunks)
    payload = offset + 8
    choice = rng.random()
    if choice < 0.3:
        value = _int32(rng, size)
        out[offset + 4 : offset + 8] = struct.pack("<I", value)
        return bytes(out), f"WebP {kind.decode('latin-1')} size {size} -> {value:#x}"
    if kind == b"VP8X" and payload + 10 <= len(out):
        if choice < 0.5:
            out[payload] = rng.choice((0x00, 0x02, 0x10, 0x12, 0x3E, 0xFF))
            return bytes(out), f"WebP VP8X flags = {out[payload]:#04x}"
        field = rng.choice((4, 7))
        value = rng.choice((0, 1, 7070, 10000, 16383, 0xFFFFFF, rng.getrandbits(24)))
        out[payload + field : payload + field + 3] = value.to_bytes(3, "little")
        return bytes(out), f"WebP VP8X canvas {'width' if field == 4 else 'height'}-1 = {value}"
    if kind == b"VP8L" and payload + 5 <= len(out):
        (bits,) = struct.unpack("<I", out[payload + 1 : payload + 5])
        shift = rng.choice((0, 14))
        value = rng.choice((0, 1, 7070, 10000, 0x3FFF, rng.getrandbits(14)))
        bits = (bits & ~(0x3FFF << shift)) | (value << shift)
        out[payload + 1 : payload + 5] = struct.pack("<I", bits)
        return bytes(out), f"WebP VP8L {'width' if shift == 0 else 'height'}-1 = {value}"
    if kind == b"VP8 " and payload + 10 <= len(out):
        field = rng.choice((6, 8))
        value = rng.choice((0, 1, 7071, 10000, 0x3FFF, 0xFFFF, rng.getrandbits(16)))
        out[payload + field : payload + field + 2] = struct.pack("<H", value)
        return bytes(out), f"WebP VP8 frame {'width' if field == 6 else 'height'} = {value:#x}"
    if kind == b"ANMF" and payload + 16 <= len(out):
        field = rng.choice((0, 3, 6, 9))
        value = rng.choice((0, 1, 7070, 10000, 0xFFFFFF, rng.getrandbits(24)))
        out[payload + field : payload + field + 3] = value.to_bytes(3, "little")
        names = {0: "x/2", 3: "y/2", 6: "width-1", 9: "height-1"}
        return bytes(out), f"WebP ANMF {names[field]} = {value}"
    if kind in (b"ANMF", b"ALPH") and rng.random() < 0.5:
        end = payload + size + (size & 1)
        times = rng.choice((2, 20, 500))
        times = min(times, max(1, (MAX_MUTANT_BYTES - len(data)) // max(end - offset, 1)))
        return data[:end] + data[offset:end] * times + data[end:], (
            f"WebP repeat {kind.decode('latin-1')} x{times}"
        )
    return None


FORMAT_MUTATORS: dict[str, tuple[Mutator, ...]] = {
    "png": (png_chunk_length, png_chunk_payload, png_chunk_payload, png_chunk_order),
    "jpeg": (
        jpeg_segment_length,
        jpeg_header_field,
        jpeg_header_field,
        jpeg_huffman_counts,
        jpeg_scan_copies,
        jpeg_insert_segment,
        jpeg_remove_segment,
    ),
    "tiff": (tiff_entry, tiff_entry, tiff_entry, tiff_structure),
    "gif": (gif_field, gif_field, gif_frames),
    "bmp": (bmp_field,),
    "webp": (webp_field,),
}


def generic_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Apply one byte-level mutation (always possible for data of 2 bytes or more)."""
    for _ in range(20):
        result = rng.choice(GENERIC)(data, rng)
        if result is not None:
            return result
    return data + b"\x00", "append a zero byte"


def mutate(
    data: bytes, image_format: str, rng: random.Random, format_share: float = 0.65
) -> tuple[bytes, list[str]]:
    """Apply one to four stacked mutations; return the mutant and what was done."""
    steps: list[str] = []
    count = rng.choice((1, 1, 1, 2, 2, 3, 4))
    for _ in range(count):
        result = None
        if rng.random() < format_share:
            result = rng.choice(FORMAT_MUTATORS[image_format])(data, rng)
        if result is None:
            result = generic_mutation(data, rng)
        mutant, step = result
        if len(mutant) > MAX_MUTANT_BYTES or not mutant:
            continue
        data = mutant
        steps.append(step)
    return data, steps
