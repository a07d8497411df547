"""Mutation fuzzing of every upload format through the real decode path, bounded for CI.

Each format's campaign is seeded (the same inputs every run) and bounded in inputs and time.
A finding in a bucket the corpus does not hold yet is saved under tests/corpus/hostile/ (commit
it: tests/integration/test_hostile_corpus.py replays it from then on) and fails the test.
Longer campaigns: scripts/fuzz_images.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fuzzing.campaign import known_buckets, run_campaign, save_findings
from tests.support.fuzzing.runner import DecodeRunner
from tests.support.fuzzing.seeds import FORMATS

pytestmark = pytest.mark.slow

SEED = 20261201
MAX_INPUTS = 300  # about 8 s per format on a quiet machine
SECONDS = 12.0


@pytest.fixture(scope="module")
def runner() -> Iterator[DecodeRunner]:
    with DecodeRunner() as decode_runner:
        yield decode_runner


@pytest.mark.parametrize("image_format", FORMATS)
def test_fuzzing_finds_nothing_new(runner: DecodeRunner, image_format: str) -> None:
    result = run_campaign(runner, image_format, seed=SEED, max_inputs=MAX_INPUTS, seconds=SECONDS)
    assert result.inputs >= 50, f"only {result.inputs} inputs ran: the decode runner is stuck"
    assert result.kinds["ok"] + result.kinds["rejected"] > 0
    known = known_buckets()
    new = [finding for finding in result.findings if finding.bucket not in known]
    saved = save_findings(new)
    assert not new, (
        f"{len(new)} new finding(s) in {result.inputs} inputs, saved as "
        f"{[str(path) for path in saved]}:\n" + "\n".join(finding.describe() for finding in new)
    )
