"""A fuzzing campaign for one format, and the corpus of hostile files its findings become.

A campaign is repeatable: the same seed gives the same inputs in the same order (mutations
never depend on outcomes), bounded by a count of inputs and by time. Findings are grouped
into buckets (format, kind, signature); the corpus keeps a few small files per bucket under
``tests/corpus/hostile/<kind>/`` with a manifest saying what each one is.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.fuzzing.mutations import mutate
from tests.support.fuzzing.runner import DecodeRunner, Outcome
from tests.support.fuzzing.seeds import seeds
from tests.support.processes import ROOT

CORPUS = ROOT / "tests" / "corpus" / "hostile"
MANIFEST = CORPUS / "manifest.json"
MAX_CORPUS_FILE_BYTES = 100_000
_EXTENSIONS = {
    "jpeg": "jpg",
    "png": "png",
    "gif": "gif",
    "bmp": "bmp",
    "webp": "webp",
    "tiff": "tif",
}


@dataclass(frozen=True)
class Finding:
    """An input that crashed, hung, ballooned or raised an undocumented error."""

    image_format: str
    seed: str
    steps: tuple[str, ...]
    data: bytes
    outcome: Outcome

    @property
    def bucket(self) -> str:
        return f"{self.image_format}/{self.outcome.signature}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def describe(self) -> str:
        return (
            f"{self.image_format} seed {self.seed!r}, {'; '.join(self.steps)} -> "
            f"{self.outcome.kind}: {self.outcome.detail}"
        )


@dataclass
class CampaignResult:
    """What a campaign ran and found."""

    image_format: str
    inputs: int = 0
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    def buckets(self) -> dict[str, list[Finding]]:
        grouped: dict[str, list[Finding]] = {}
        for finding in self.findings:
            grouped.setdefault(finding.bucket, []).append(finding)
        return grouped


def run_campaign(
    runner: DecodeRunner,
    image_format: str,
    *,
    seed: int = 0,
    max_inputs: int = 1_000_000,
    seconds: float = 10.0,
    keep_per_bucket: int = 3,
    seed_names: tuple[str, ...] = (),
) -> CampaignResult:
    """Mutate the format's seeds (or only those named) and run each mutant.

    Stops after max_inputs or seconds, whichever comes first.
    """
    rng = random.Random(f"{image_format}:{seed}")
    pool = [each for each in seeds(image_format) if not seed_names or each.name in seed_names]
    if not pool:
        raise ValueError(f"no {image_format} seed is named {seed_names}")
    result = CampaignResult(image_format)
    kept: Counter[str] = Counter()
    start = time.monotonic()
    while result.inputs < max_inputs and time.monotonic() - start < seconds:
        parent = rng.choice(pool)
        data, steps = mutate(parent.data, image_format, rng)
        outcome = runner.run(data)
        result.inputs += 1
        result.kinds[outcome.kind] += 1
        if outcome.is_finding:
            finding = Finding(image_format, parent.name, tuple(steps), data, outcome)
            if kept[finding.bucket] < keep_per_bucket:
                kept[finding.bucket] += 1
                result.findings.append(finding)
    result.seconds = time.monotonic() - start
    return result


def load_manifest() -> dict[str, dict[str, Any]]:
    """Return the corpus manifest: file path (relative to the corpus) -> what it is."""
    try:
        manifest: dict[str, dict[str, Any]] = json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return {}
    return manifest


def known_buckets() -> set[str]:
    """Return the buckets the corpus already holds a file for."""
    return {entry["bucket"] for entry in load_manifest().values()}


def save_findings(findings: list[Finding], per_bucket: int = 1) -> list[Path]:
    """Save the smallest findings of each bucket not yet in the corpus; return their paths."""
    manifest = load_manifest()
    known = {entry["bucket"] for entry in manifest.values()}
    known_hashes = {entry["sha256"] for entry in manifest.values()}
    saved = []
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        if len(finding.data) <= MAX_CORPUS_FILE_BYTES and finding.sha256 not in known_hashes:
            grouped.setdefault(finding.bucket, []).append(finding)
    for bucket, members in sorted(grouped.items()):
        if bucket in known:
            continue
        for finding in sorted(members, key=lambda member: len(member.data))[:per_bucket]:
            name = (
                f"{finding.outcome.kind}/{finding.image_format}-{finding.sha256[:12]}."
                f"{_EXTENSIONS[finding.image_format]}"
            )
            path = CORPUS / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(finding.data)
            manifest[name] = {
                "bucket": bucket,
                "sha256": finding.sha256,
                "format": finding.image_format,
                "kind": finding.outcome.kind,
                "found": finding.describe(),
                "source": "fuzzer",
            }
            saved.append(path)
    if saved:
        MANIFEST.parent.mkdir(parents=True, exist_ok=True)
        MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return saved
