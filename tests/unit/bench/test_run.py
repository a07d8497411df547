"""The command line: which panels a run plans and where an engines-only run writes."""

from __future__ import annotations

import pytest
from run import RESULTS, make_plan, parse_args


def test_full_run_plans_classic_and_engine_panels() -> None:
    plan = make_plan(parse_args([]))
    assert plan.mode == "full"
    assert [panel.model for panel in plan.engines] == ["efficientnetb0", "vgg16"]
    assert plan.panels and plan.sweep


def test_engines_only_plans_nothing_else_and_writes_beside_the_full_results() -> None:
    args = parse_args(["--engines-only", "--engine-precisions", "float32,int8"])
    plan = make_plan(args)
    assert plan.mode == "engines"
    assert plan.panels == () and plan.sweep == ()
    keys = [system.key for system in plan.engines[0].ceilings]
    assert keys == ["tensorflow/float32", "openvino/float32", "openvino/int8"]
    assert args.results == RESULTS / "engines"
    assert parse_args([]).results == RESULTS


def test_no_engines_drops_the_engine_panels() -> None:
    assert make_plan(parse_args(["--no-engines"])).engines == ()


def test_unknown_engine_precision_is_refused_loudly() -> None:
    with pytest.raises(SystemExit, match="--engine-precisions"):
        parse_args(["--engine-precisions", "float16"])


def test_listing_the_precisions_includes_vgg16_int8() -> None:
    default = make_plan(parse_args(["--engines-only"]))
    assert "openvino/int8" not in [s.key for s in default.engines[1].ceilings]
    assert "openvino/int8" in [s.key for s in default.engines[0].ceilings]
    listed = make_plan(parse_args(["--engines-only", "--engine-precisions", "float32,int8"]))
    assert "openvino/int8" in [s.key for s in listed.engines[1].ceilings]
