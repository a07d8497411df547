"""Replay every kept hostile file (tests/corpus/hostile/) through both decode paths.

Through the service's decode sandbox (what /predict uses), each must be decoded or refused
with a documented 4xx error within the fuzzer's limits: no crash, no hang, no balloon.
Through OpenCV in-process (DECODER_PROCESSES=0, and what runs inside a decoder process),
files OpenCV itself still fails on carry an ``expected_failure`` in the manifest (strict:
once OpenCV is fixed, remove it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fuzzing.campaign import CORPUS, load_manifest
from tests.support.fuzzing.runner import DecodeRunner
from tests.support.fuzzing.targets import SANDBOX_TARGET

pytestmark = pytest.mark.slow


def _names() -> list[str]:
    return sorted(load_manifest())


def _cases() -> list[object]:
    cases = []
    for name, entry in sorted(load_manifest().items()):
        marks = []
        if entry.get("expected_failure"):
            # Near a bound (e.g. 318 MB against 300 MB): machine-dependent, so not strict.
            strict = not entry.get("near_bound", False)
            marks.append(pytest.mark.xfail(strict=strict, reason=entry["expected_failure"]))
        cases.append(pytest.param(name, id=name, marks=marks))
    return cases


@pytest.fixture(scope="module")
def runner() -> Iterator[DecodeRunner]:
    with DecodeRunner() as decode_runner:
        yield decode_runner


@pytest.fixture(scope="module")
def sandbox_runner() -> Iterator[DecodeRunner]:
    with DecodeRunner(SANDBOX_TARGET) as decode_runner:
        yield decode_runner


def test_the_corpus_is_small_and_complete() -> None:
    manifest = load_manifest()
    files = {
        str(path.relative_to(CORPUS))
        for path in CORPUS.rglob("*")
        if path.is_file() and path.name != "manifest.json"
    }
    assert files == set(manifest)
    assert all((CORPUS / name).stat().st_size < 100_000 for name in files)


@pytest.mark.parametrize("name", _names())
def test_the_sandbox_decodes_or_refuses_the_file_within_limits(
    sandbox_runner: DecodeRunner, name: str
) -> None:
    outcome = sandbox_runner.run((CORPUS / name).read_bytes())
    assert outcome.kind in ("ok", "rejected"), f"{load_manifest()[name]['found']}\nnow: {outcome}"


@pytest.mark.parametrize("name", _cases())
def test_opencv_in_process_decodes_or_refuses_the_file_within_limits(
    runner: DecodeRunner, name: str
) -> None:
    outcome = runner.run((CORPUS / name).read_bytes())
    assert outcome.kind in ("ok", "rejected"), f"{load_manifest()[name]['found']}\nnow: {outcome}"
