"""The engine targets of issue 11: measured value and met / missed / not measured."""

from __future__ import annotations

from targets import Verdict, evaluate

from tests.support.bench_results import ceiling, panel, refused, results, served

SMALL = "efficientnetb0"


def _small(**served_entries: dict[str, object]) -> dict[str, object]:
    ceilings = {
        "tensorflow/float32": ceiling({1: 10.0, 8: 20.0}, computes="float32"),
        "openvino/float32": ceiling({1: 25.0, 8: 45.0}),
        "openvino/bfloat16": ceiling({1: 25.0, 8: 46.0}, computes="f32"),
    }
    entries = {"tensorflow/float32": served({1: 9.0, 8: 19.0})} | {
        key.replace("__", "/"): value for key, value in served_entries.items()
    }
    return panel(SMALL, ceilings, entries)


def _verdict(verdicts: list[Verdict], start: str) -> Verdict:
    return next(v for v in verdicts if v.name.startswith(start))


def test_float32_target_met_with_identical_top1() -> None:
    run = results(_small(openvino__float32=served({1: 20.0, 8: 40.0})))
    verdict = _verdict(evaluate(run), f"{SMALL} 224: onemodel openvino/float32")
    assert verdict.met is True
    assert "40.00 vs 20.00 img/s = 2.00 x" in verdict.measured
    assert "top-1 100%" in verdict.measured


def test_float32_target_missed_when_top1_differs_however_fast() -> None:
    run = results(_small(openvino__float32=served({8: 80.0}, top1=0.75)))
    verdict = _verdict(evaluate(run), f"{SMALL} 224: onemodel openvino/float32")
    assert verdict.met is False


def test_float32_target_missed_below_the_factor() -> None:
    run = results(_small(openvino__float32=served({8: 30.0})))
    verdict = _verdict(evaluate(run), f"{SMALL} 224: onemodel openvino/float32")
    assert verdict.met is False
    assert "1.50 x" in verdict.measured


def test_bfloat16_computed_in_f32_is_not_measurable_but_keeps_the_figure() -> None:
    run = results(_small(openvino__bfloat16=served({8: 42.0})))
    verdict = _verdict(evaluate(run), f"{SMALL} 224: onemodel openvino/bfloat16")
    assert verdict.met is None
    assert verdict.measured.startswith("not measurable: CPU has no bf16 units")
    assert "42.00 vs 20.00 img/s = 2.10 x" in verdict.measured


def test_bfloat16_target_judged_when_openvino_computes_bf16() -> None:
    small = _small(openvino__bfloat16=served({8: 70.0}))
    small["ceilings"]["openvino/bfloat16"] = ceiling({8: 80.0}, computes="bf16")  # type: ignore[index]
    verdict = _verdict(evaluate(results(small)), f"{SMALL} 224: onemodel openvino/bfloat16")
    assert verdict.met is True


def test_refused_precision_is_not_measured_with_its_reason() -> None:
    small = _small()
    small["ceilings"]["openvino/float32"] = refused("refused: the conversion differs")  # type: ignore[index]
    small["served"]["openvino/float32"] = refused("refused: the conversion differs")  # type: ignore[index]
    verdict = _verdict(evaluate(results(small)), f"{SMALL} 224: onemodel openvino/float32")
    assert verdict.met is None
    assert "the conversion differs" in verdict.measured


def test_vgg16_deployment_memory_against_the_tensorflow_process() -> None:
    vgg16 = panel(
        "vgg16",
        {"tensorflow/float32": ceiling({8: 5.0}, computes="float32", pss_mib=2000)},
        {"openvino/float32": served({8: 5.0}, pss_mib=1500)},
    )
    verdict = _verdict(evaluate(results(vgg16)), "VGG16: onemodel openvino/float32 deployment")
    assert verdict.met is True
    assert "1500 vs 2000 MiB = 0.75 x" in verdict.measured
    heavier = panel(
        "vgg16",
        {"tensorflow/float32": ceiling({8: 5.0}, computes="float32", pss_mib=2000)},
        {"openvino/float32": served({8: 5.0}, pss_mib=1700)},
    )
    assert _verdict(evaluate(results(heavier)), "VGG16: onemodel openvino").met is False


def test_no_engine_targets_without_engine_panels() -> None:
    names = [verdict.name for verdict in evaluate(results())]
    assert not any("openvino" in name for name in names)


def test_engine_timings_carry_their_other_cpu_share() -> None:
    run = results(_small(openvino__float32=served({8: 40.0})))
    run["engines"][0]["served"]["openvino/float32"]["points"][0]["other_cpu_share"] = 0.4
    verdict = _verdict(evaluate(run), f"{SMALL} 224: onemodel openvino/float32")
    assert verdict.other_cpu_share == 0.4
    assert not verdict.reliable
