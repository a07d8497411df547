"""Every hostile image of the suite through OpenCV in-process, in a limited child process.

The same files the e2e suite sends over HTTP, without HTTP and without the decode sandbox:
what OpenCV itself does with them (what runs inside a decoder process, and in the worker
with DECODER_PROCESSES=0). Each should be decoded or refused with a documented 4xx error
with no crash, no hang (2 s of CPU) and no balloon (300 MB of peak RSS); the ones OpenCV
still fails are expected failures: the sandbox contains them (the e2e suite checks that),
only a decoder fix makes these pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fuzzing.runner import DecodeRunner
from tests.support.hostile import hostile_case, hostile_cases

pytestmark = pytest.mark.slow

_SANDBOX = "OpenCV 5.0.0 itself: contained by the decode sandbox, not fixed"
# What OpenCV still fails (2026-12-01); strict, so a fix shows and its line must go.
EXPECTED_FAILURES: dict[str, str] = {
    name: _SANDBOX
    for name in (
        "PNG IDAT length claims 1024 MB",
        "PNG IDAT length claims 1536 MB",
        "PNG tEXt length claims 768 MB",
        "PNG PLTE length claims 768 MB",
        "JPEG hidden frame header: 16x16 outside, 10000x10000 inside",
        "TIFF duplicate width/height tags: 10000 first, 16 second",
        "GIF at the pixel limit (LZW data cut short)",
        "APNG (animated, separate default image): bad row filter in the first fdAT",  # SIGSEGV
        "progressive JPEG 7000x7000, 2000 scans",
        "progressive JPEG 7000x7000 colour, 6000 scans (100 KB)",
    )
}
# Within a few per cent of a bound (300 MB, 2 s of CPU): machine-dependent, not strict.
BORDERLINE = (
    "JPEG hidden frame header: 16x16 outside, 7071x7071 grey inside",
    "WebP lossless at the pixel limit",
    "PNG 256-colour palette with full tRNS at the pixel limit",
    "TIFF deflate RGB at the pixel limit, one shared strip",
    "progressive JPEG 4000x4000, 500 scans",
)


def _marks(name: str) -> list[Any]:
    if name in EXPECTED_FAILURES:
        return [pytest.mark.xfail(strict=True, reason=EXPECTED_FAILURES[name])]
    if name in BORDERLINE:
        return [pytest.mark.xfail(strict=False, reason=_SANDBOX + " (near a bound)")]
    return []


def _params() -> list[Any]:
    return [
        pytest.param(case.name, id=case.name, marks=_marks(case.name))
        for case in hostile_cases()
        if case.image and "corpus" not in case.tags  # test_hostile_corpus.py replays those
    ]


@pytest.fixture(scope="module")
def runner() -> Iterator[DecodeRunner]:
    with DecodeRunner() as decode_runner:
        yield decode_runner


@pytest.mark.parametrize("name", _params())
def test_hostile_image_is_decoded_or_refused_within_limits(runner: DecodeRunner, name: str) -> None:
    case = hostile_case(name)
    outcome = runner.run(case.body_bytes())
    assert outcome.kind in ("ok", "rejected"), outcome.summary()
    if 200 not in case.statuses:
        assert outcome.kind == "rejected", outcome.summary()


def test_expected_failures_name_real_cases() -> None:
    names = {case.name for case in hostile_cases() if case.image and "corpus" not in case.tags}
    assert set(EXPECTED_FAILURES) | set(BORDERLINE) <= names
