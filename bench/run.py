"""Benchmark onemodel against its baselines: ``python bench/run.py [--quick]`` (bench/README.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import assets
import environment
import pool
import report
from plan import ENGINE_MODELS, ENGINE_PRECISIONS, SYSTEMS, Plan, build_engine_panels, build_plan
from runner import RunConfig, Runner, log_line
from targets import evaluate

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
DOCS_PAGE = BENCH.parent / "docs" / "benchmarks.md"
MODELS = ("tiny", "vgg16")
PRECISIONS = ("float32", "bfloat16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="under 3 minutes: tiny model everywhere, VGG16 only at c=1 and 8",
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="comma-separated float32,bfloat16 (default: float32 in quick mode, both in full mode)",
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated tiny,vgg16")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated tutorial,naive,onemodel"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of load per tiny-model point (default 3 quick, 6 full)",
    )
    parser.add_argument(
        "--vgg16-duration",
        type=float,
        default=None,
        help="seconds of load per VGG16 point (default 6 quick, 12 full)",
    )
    parser.add_argument(
        "--engine",
        choices=("tensorflow", "openvino", "auto"),
        default="tensorflow",
        help="onemodel's MODEL_ENGINE (default tensorflow: the same engine as the ceiling)",
    )
    parser.add_argument(
        "--engine-models",
        default=None,
        help="comma-separated efficientnetb0,vgg16,tiny for the engine panels "
        "(default: efficientnetb0,vgg16; quick: efficientnetb0)",
    )
    parser.add_argument(
        "--engine-precisions",
        default=None,
        help="comma-separated float32,bfloat16,int8: OpenVINO's precisions in the engine panels "
        "(default all three, int8 not for VGG16 unless listed here; quick: float32 only)",
    )
    engines = parser.add_mutually_exclusive_group()
    engines.add_argument(
        "--engines-only", action="store_true", help="only the engine panels (make bench-engines)"
    )
    engines.add_argument("--no-engines", action="store_true", help="skip the engine panels")
    parser.add_argument("--web-concurrency", type=int, default=4, help="onemodel workers")
    parser.add_argument("--web-threads", type=int, default=8, help="onemodel threads per worker")
    parser.add_argument(
        "--no-pool",
        action="store_true",
        help="full mode: skip one vs two model servers under faults (bench/pool.py)",
    )
    parser.add_argument(
        "--no-sweep", action="store_true", help="full mode: skip trying other worker/thread counts"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="output folder (default bench/results; --engines-only: bench/results/engines, "
        "so it leaves the full run's files alone)",
    )
    parser.add_argument(
        "--page",
        type=Path,
        default=None,
        help="write the docs page here (default: docs/benchmarks.md, only for a full run "
        "published into bench/results)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: re-evaluate and re-render the results in this JSON file",
    )
    args = parser.parse_args(argv)
    if args.results is None:
        args.results = RESULTS / "engines" if args.engines_only else RESULTS
    args.precisions = _choices(
        args.precision or ("float32" if args.quick else "float32,bfloat16"),
        PRECISIONS,
        "--precision",
    )
    args.model_list = _choices(args.models, MODELS, "--models")
    args.system_list = _choices(args.systems, SYSTEMS, "--systems")
    default_engine_models = "efficientnetb0" if args.quick else ",".join(ENGINE_MODELS)
    args.engine_model_list = _choices(
        args.engine_models or default_engine_models, (*ENGINE_MODELS, "tiny"), "--engine-models"
    )
    args.engine_precision_list = _choices(
        args.engine_precisions or ",".join(ENGINE_PRECISIONS),
        ENGINE_PRECISIONS,
        "--engine-precisions",
    )
    return args


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    chosen = tuple(item.strip() for item in text.split(",") if item.strip())
    unknown = [item for item in chosen if item not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"{flag}: choose from {', '.join(allowed)} (got {text!r})")
    return chosen


def make_plan(args: argparse.Namespace) -> Plan:
    """Turn the options into the list of measurements."""
    small_duration_s = args.duration or (3.0 if args.quick else 6.0)
    vgg16_duration_s = args.vgg16_duration or (6.0 if args.quick else 12.0)
    plan = build_plan(
        quick=args.quick,
        models=args.model_list,
        precisions=args.precisions,
        tiny_duration_s=small_duration_s,
        vgg16_duration_s=vgg16_duration_s,
        sweep=not args.no_sweep,
        systems=args.system_list,
    )
    engines = build_engine_panels(
        quick=args.quick,
        models=() if args.no_engines else args.engine_model_list,
        precisions=args.engine_precision_list,
        small_duration_s=small_duration_s,
        vgg16_duration_s=vgg16_duration_s,
        int8_vgg16=args.engine_precisions is not None,
    )
    if args.engines_only:
        return Plan(mode="engines", panels=(), engines=engines)
    return dataclasses.replace(plan, engines=engines)


def model_paths(plan: Plan) -> dict[str, str]:
    """Build the models the plan needs once (bench/.cache) and return every model's path."""
    needed = {panel.model for panel in plan.panels} | {panel.model for panel in plan.engines}
    needed |= {run.model for run in plan.sweep}
    paths = {"vgg16": "vgg16"}
    if "tiny" in needed:
        paths["tiny"] = str(assets.ensure_tiny_model())
    for model in sorted(needed - {"tiny", "vgg16"}):
        log_line(f"preparing {model} (built once with random weights into {assets.CACHE})")
        paths[model] = str(assets.ensure_application_model(model))
    return paths


def _stop_on_sigterm() -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds into the launcher, which stops every process

    signal.signal(signal.SIGTERM, handle)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare the inputs, measure the plan, and return results with their metadata."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.time()
    load_start = [round(v, 2) for v in os.getloadavg()]
    plan = make_plan(args)
    log_line("preparing the models, the JPEG uploads and the int8 calibration images")
    config = RunConfig(
        model_paths=model_paths(plan),
        uploads=assets.ensure_uploads(),
        web_workers=args.web_concurrency,
        web_threads=args.web_threads,
        engine=args.engine,
        log_dir=assets.CACHE / "logs" / stamp,
        calibration_dir=assets.ensure_calibration_images(),
    )
    log_line(f"{plan.mode} run, logs in {config.log_dir}")
    measured = Runner(plan, config).run()
    if plan.mode == "full" and "onemodel" in args.system_list and not args.no_pool:
        measured["pool"] = pool.measure(pool.PoolConfig.for_run(config))
    meta = {
        "stamp": stamp,
        "mode": plan.mode,
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "elapsed_s": round(time.time() - started, 1),
        "machine": environment.machine(),
        "versions": environment.versions(),
        "load_average_start": load_start,
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "web_workers": args.web_concurrency,
        "web_threads": args.web_threads,
        "engine": args.engine,
        "model_cache_dir": str(config.model_cache_dir),
        "uploads": {
            name: {"file": u.path.name, "width": u.width, "height": u.height, "bytes": u.size_bytes}
            for name, u in config.uploads.items()
        },
    }
    return {"meta": meta, **measured}


def docs_page(args: argparse.Namespace, results: dict[str, Any]) -> Path | None:
    """Return where the docs page goes: --page, else docs/benchmarks.md for a full run."""
    if args.page is not None:
        return Path(args.page)
    # The page documents the committed results: a quick run or a run written to another
    # folder would replace its full tables with partial or unpublished ones.
    if results["meta"]["mode"] == "full" and args.results.resolve() == RESULTS:
        return DOCS_PAGE
    return None


def publish(results: dict[str, Any], directory: Path, page: Path | None) -> None:
    """Print the table and write the JSON, markdown and PNG outputs, and the docs page."""
    verdicts = evaluate(results)
    results["targets"] = [verdict.as_dict() for verdict in verdicts]
    print(report.terminal_report(results, verdicts))
    stamped = report.write_json(results, directory, results["meta"]["stamp"])
    report.write_text(directory / "latest.md", report.markdown_report(results, verdicts))
    chart = directory / "latest.png"
    if results["panels"]:
        report.plot(results, chart)
    log_line(f"wrote {stamped}, latest.json, latest.md and latest.png in {directory}")
    if page is None:
        log_line(f"left {DOCS_PAGE} alone (not a full run into {RESULTS}; --page to choose)")
        return
    report.write_text(page, report.benchmarks_page(results, verdicts, page=page, chart=chart))
    log_line(f"wrote {page}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        publish(results, args.results, docs_page(args, results))
        return 0
    _stop_on_sigterm()
    try:
        results = run(args)
    except KeyboardInterrupt:
        log_line("interrupted: every started process was stopped")
        return 130
    publish(results, args.results, docs_page(args, results))
    log_line(f"done in {results['meta']['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
