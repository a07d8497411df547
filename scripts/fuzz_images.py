"""Run a longer mutation-fuzzing campaign on one or every upload format; save new findings.

    PYTHONPATH=$PWD/src:$PWD .venv/bin/python scripts/fuzz_images.py --seconds 300 --format png

Each finding in a bucket the corpus lacks is saved under tests/corpus/hostile/<kind>/ (with
an entry in its manifest.json) so tests/integration/test_hostile_corpus.py replays it. The
decode path is a parameter (--target module:function) so a sandboxed decoder can be fuzzed
the same way. One format at a time: the decoder runs in one child process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fuzzing.campaign import run_campaign, save_findings
from tests.support.fuzzing.runner import DecodeRunner, Limits
from tests.support.fuzzing.seeds import FORMATS
from tests.support.fuzzing.targets import DEFAULT_TARGET


def main() -> int:
    """Parse flags, fuzz each format in turn, print a summary; exit 1 if anything was found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=[*FORMATS, "all"], default="all")
    parser.add_argument("--seconds", type=float, default=60.0, help="per format")
    parser.add_argument("--seed", type=int, default=1, help="the same seed, the same inputs")
    parser.add_argument("--max-inputs", type=int, default=10_000_000)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="module:function to fuzz")
    parser.add_argument("--rss-bound-mb", type=int, default=300)
    parser.add_argument("--hang-cpu-s", type=float, default=2.0)
    parser.add_argument("--seeds", default="", help="comma-separated seed names (default: all)")
    parser.add_argument("--no-save", action="store_true", help="do not write the corpus")
    parser.add_argument("--report", type=Path, help="write every finding as JSON here")
    args = parser.parse_args()
    limits = Limits(
        rss_bound_bytes=args.rss_bound_mb * 2**20,
        hang_cpu_s=args.hang_cpu_s,
        cpu_kill_s=args.hang_cpu_s * 2,
    )
    formats = FORMATS if args.format == "all" else (args.format,)
    report = []
    found = 0
    with DecodeRunner(args.target, limits) as runner:
        for image_format in formats:
            result = run_campaign(
                runner,
                image_format,
                seed=args.seed,
                max_inputs=args.max_inputs,
                seconds=args.seconds,
                seed_names=tuple(name for name in args.seeds.split(",") if name),
            )
            rate = result.inputs / max(result.seconds, 1e-9)
            print(
                f"{image_format}: {result.inputs} inputs in {result.seconds:.0f} s "
                f"({rate:.0f}/s) {dict(result.kinds)}"
            )
            for bucket, members in sorted(result.buckets().items()):
                smallest = min(members, key=lambda member: len(member.data))
                print(f"  {bucket}: {len(members)} kept; smallest {len(smallest.data)} bytes:")
                print(f"    {smallest.describe()}")
            found += len(result.findings)
            if not args.no_save:
                for path in save_findings(result.findings):
                    print(f"  saved {path}")
            report.extend(
                {
                    "bucket": finding.bucket,
                    "bytes": len(finding.data),
                    "sha256": finding.sha256,
                    "description": finding.describe(),
                    "outcome": finding.outcome.summary(),
                }
                for finding in result.findings
            )
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
