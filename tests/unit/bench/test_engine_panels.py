"""How an engine panel turns timed windows into figures and ratios."""

from __future__ import annotations

import pytest
from engine_panels import _last_onemodel_line, _reason, _rotated, _summarise_ceiling


def _window(batch: int, round_: int, rate: float, during_served: bool = False) -> dict[str, object]:
    return {
        "batch": batch,
        "round": round_,
        "during_served": during_served,
        "calls": int(rate),
        "seconds": batch * 1.0,
        "images_per_s": rate,
        "other_cpu_share": 0.1 * round_,
    }


def test_ceiling_figures_cover_every_window_and_ratios_pair_rounds() -> None:
    tensorflow = {
        "measurements": [_window(8, 1, 10.0), _window(8, 2, 20.0), _window(8, 1, 40.0, True)]
    }
    openvino = {"measurements": [_window(8, 1, 25.0), _window(8, 2, 30.0)]}
    _summarise_ceiling(tensorflow, tensorflow, "tensorflow/float32")
    _summarise_ceiling(openvino, tensorflow, "openvino/float32")
    (tf8,) = tensorflow["batches"]
    # batch x calls / seconds over all three windows: 8 x (10 + 20 + 40) / 24
    assert tf8["images_per_s"] == pytest.approx(8 * 70 / 24, rel=1e-3)
    assert tf8["other_cpu_share"] == pytest.approx(0.2)
    assert "ratio_to_tensorflow_median" not in tf8
    (ov8,) = openvino["batches"]
    # Round by round, never against the window taken between served rounds.
    assert ov8["ratio_to_tensorflow_rounds"] == [2.5, 1.5]
    assert ov8["ratio_to_tensorflow_median"] == 2.0


def test_rotation_changes_who_goes_first() -> None:
    keys = ["a", "b", "c"]
    assert _rotated(keys, 0) == ["a", "b", "c"]
    assert _rotated(keys, 1) == ["b", "c", "a"]
    assert _rotated(keys, 4) == ["b", "c", "a"]
    assert _rotated([], 3) == []


def test_a_refusal_keeps_onemodel_s_own_message() -> None:
    argparse_tail = "usage: ...\nonemodel prepare: error: MODEL_PRECISION='int8' is not one of"
    assert _reason(argparse_tail) == "MODEL_PRECISION='int8' is not one of"
    logged = "2026-12-02 02:28:03,300 [1114] ERROR onemodel.cli: int8 agrees on 91% (< 99%)"
    assert _reason(logged) == "onemodel.cli: int8 agrees on 91% (< 99%)"
    assert _reason("") == "no output"


def test_a_timed_out_prepare_reports_onemodel_s_last_message_not_a_progress_bar() -> None:
    tail = (
        "2026-12-02 02:54:43,451 [22294] INFO onemodel.model_server.quantization: int8 "
        "top-1 agreement 75.0% (15 of 20 images)\nStatistics collection ━━━ 100% 80/80"
    )
    assert _last_onemodel_line(tail).endswith("int8 top-1 agreement 75.0% (15 of 20 images)")
