"""The fuzzer's own parts: mutations keep files framed; the runner sees every kind of finding."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from tests.support.fuzzing.mutations import (
    MAX_MUTANT_BYTES,
    jpeg_scan_copies,
    jpeg_segments,
    mutate,
    png_chunk_payload,
    png_chunks,
    tiff_entry,
    tiff_ifd,
)
from tests.support.fuzzing.runner import DecodeRunner, Limits
from tests.support.fuzzing.seeds import FORMATS, seeds


def _seed(image_format: str, name: str) -> bytes:
    (seed,) = [seed for seed in seeds(image_format) if seed.name == name]
    return seed.data


@pytest.mark.parametrize("image_format", FORMATS)
def test_mutations_are_repeatable_and_small(image_format: str) -> None:
    def run(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        pool = seeds(image_format)
        return [mutate(rng.choice(pool).data, image_format, rng)[0] for _ in range(60)]

    first = run(1)
    assert first == run(1)
    assert first != run(2)
    assert all(0 < len(mutant) <= MAX_MUTANT_BYTES for mutant in first)


def test_png_payload_mutations_recompute_the_crc() -> None:
    rng = random.Random(5)
    for _ in range(30):
        result = png_chunk_payload(_seed("png", "rgb"), rng)
        if result is None:
            continue
        mutant = result[0]
        assert png_chunks(mutant)  # still framed...
        position = 8
        for _, kind, payload in png_chunks(mutant):
            crc = struct.unpack(
                ">I", mutant[position + 8 + len(payload) : position + 12 + len(payload)]
            )
            assert crc[0] == zlib.crc32(kind + payload) & 0xFFFFFFFF  # ...with a valid CRC
            position += 12 + len(payload)


def test_jpeg_scan_copies_multiply_the_scans() -> None:
    data = _seed("jpeg", "progressive")
    scans_before = sum(1 for _, marker, _ in jpeg_segments(data) if marker == 0xDA)
    mutant, _ = jpeg_scan_copies(data, random.Random(3)) or (b"", "")
    assert sum(1 for _, marker, _ in jpeg_segments(mutant) if marker == 0xDA) > scans_before


def test_tiff_entry_mutations_rewrite_a_parseable_ifd() -> None:
    rng = random.Random(9)
    for _ in range(20):
        mutant, _ = tiff_entry(_seed("tiff", "raw"), rng) or (b"", "")
        assert tiff_ifd(mutant) is not None


@pytest.mark.parametrize(
    ("target", "kind", "detail"),
    [
        ("crash", "crash", "SIGSEGV"),
        ("spin", "hang", ""),
        ("allocate", "balloon", "peak RSS"),
        ("refuse", "rejected", "400 invalid_image"),
        ("fail", "exception", "KeyError"),
    ],
)
def test_the_runner_classifies_each_misbehaviour(target: str, kind: str, detail: str) -> None:
    limits = Limits(hang_cpu_s=1.5, cpu_kill_s=2.0, wall_timeout_s=5.0)
    with DecodeRunner(f"tests.support.fuzzing.targets:{target}", limits) as runner:
        outcome = runner.run(b"x")
        assert (outcome.kind, detail in outcome.detail) == (kind, True), outcome
        # The runner survives every kind and goes on decoding.
        assert runner.run(b"y").kind == kind


def test_the_real_decoder_accepts_every_seed() -> None:
    with DecodeRunner() as runner:
        for image_format in FORMATS:
            for seed in seeds(image_format):
                outcome = runner.run(seed.data)
                assert outcome.kind == "ok", (image_format, seed.name, outcome)
