"""Every hostile image of the suite through the real decode path, in a limited child process.

The same files the e2e suite sends over HTTP, without HTTP: each must be decoded or refused
with a documented 4xx error with no crash, no hang (2 s of CPU) and no balloon (300 MB of
peak RSS). Cheaper than the e2e run and it names the decoder at fault; the decode callable
is a parameter of DecodeRunner, so a sandboxed decoder is checked the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fuzzing.runner import DecodeRunner
from tests.support.hostile import hostile_case, hostile_cases

pytestmark = pytest.mark.slow

_SANDBOX = "decoded in-process today: the decode sandbox must bound it"
# Filled from a run on main; strict, so a fix shows.
EXPECTED_FAILURES: dict[str, str] = {}


def _params() -> list[Any]:
    return [
        pytest.param(
            case.name,
            id=case.name,
            marks=[pytest.mark.xfail(strict=True, reason=EXPECTED_FAILURES[case.name])]
            if case.name in EXPECTED_FAILURES
            else [],
        )
        for case in hostile_cases()
        if case.image
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
    assert set(EXPECTED_FAILURES) <= {case.name for case in hostile_cases() if case.image}
