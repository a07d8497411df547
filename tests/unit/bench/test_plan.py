"""What a quick, full or engines-only run measures."""

from __future__ import annotations

from plan import SWEEP_TINY, EngineSystem, build_engine_panels, build_plan

TF = EngineSystem("tensorflow", "float32")


def _engines(quick: bool, precisions: tuple[str, ...] = ("float32", "bfloat16", "int8")):  # type: ignore[no-untyped-def]
    return build_engine_panels(
        quick=quick,
        models=("efficientnetb0", "vgg16"),
        precisions=precisions,
        small_duration_s=6.0,
        vgg16_duration_s=12.0,
    )


def test_full_engine_panels_interleave_every_precision_beside_tensorflow() -> None:
    small, _ = _engines(quick=False)
    keys = [system.key for system in small.ceilings]
    assert keys == ["tensorflow/float32", "openvino/float32", "openvino/bfloat16", "openvino/int8"]
    assert small.served == small.ceilings
    assert small.concurrencies == (1, 8)
    assert small.batches == (1, 8)
    assert small.rounds == 3
    assert small.duration_s == 6.0


def test_full_vgg16_engine_panel_serves_float32_on_both_engines_at_8_clients() -> None:
    _, vgg16 = _engines(quick=False)
    assert [system.key for system in vgg16.served] == ["tensorflow/float32", "openvino/float32"]
    assert vgg16.concurrencies == (8,)
    assert vgg16.duration_s == 12.0
    assert vgg16.ceiling_duration_s > 2.0  # a VGG16 batch of 8 takes about a second


def test_quick_engine_panel_is_the_small_model_in_float32_once() -> None:
    (small,) = _engines(quick=True)
    assert small.model == "efficientnetb0"
    assert small.ceilings == (TF, EngineSystem("openvino", "float32"))
    assert small.rounds == 1
    assert small.served == (EngineSystem("openvino", "float32"),)
    assert small.concurrencies == (8,)


def test_without_openvino_float32_only_tensorflow_is_served_for_vgg16() -> None:
    _, vgg16 = _engines(quick=False, precisions=("bfloat16",))
    assert vgg16.served == (TF,)
    assert EngineSystem("openvino", "bfloat16") in vgg16.ceilings


def test_full_plan_drops_the_tiny_bfloat16_panel_and_the_large_vgg16_baselines() -> None:
    plan = build_plan(
        quick=False,
        models=("tiny", "vgg16"),
        precisions=("float32", "bfloat16"),
        tiny_duration_s=6.0,
        vgg16_duration_s=12.0,
        sweep=True,
    )
    assert [panel.key for panel in plan.panels] == [
        "tiny/float32",
        "vgg16/float32",
        "vgg16/bfloat16",
    ]
    vgg16 = {run.system: run for run in plan.panels[1].systems}
    assert vgg16["onemodel"].uploads == ("224", "large")
    assert vgg16["tutorial"].uploads == ("224",)
    tiny = {run.system: run for run in plan.panels[0].systems}
    assert tiny["naive"].uploads == ("224", "large")
    # The panels already measure onemodel's default 4x8: the sweep tries other shapes only.
    assert (4, 8) not in SWEEP_TINY
    assert all(run.concurrency == 16 for run in plan.sweep)


def test_quick_plan_keeps_a_requested_tiny_bfloat16_panel() -> None:
    plan = build_plan(
        quick=True,
        models=("tiny",),
        precisions=("bfloat16",),
        tiny_duration_s=3.0,
        vgg16_duration_s=6.0,
        sweep=False,
    )
    assert [panel.key for panel in plan.panels] == ["tiny/bfloat16"]


def test_vgg16_int8_only_when_asked_for() -> None:
    _, vgg16 = _engines(quick=False)
    assert EngineSystem("openvino", "int8") not in vgg16.ceilings
    asked = build_engine_panels(
        quick=False,
        models=("vgg16",),
        precisions=("float32", "int8"),
        small_duration_s=6.0,
        vgg16_duration_s=12.0,
        int8_vgg16=True,
    )
    assert EngineSystem("openvino", "int8") in asked[0].ceilings
