"""The engines section of the report: the table, the CPU rows and the generated advice."""

from __future__ import annotations

from report import cpu_rows, engine_advice, engine_cpu_rows, engine_rows, engines_lines

from tests.support.bench_results import ceiling, panel, refused, results, served

HEADERS_CELLS = 13


def _small(ov_c8: float = 40.0) -> dict[str, object]:
    return panel(
        "efficientnetb0",
        {
            "tensorflow/float32": ceiling({1: 10.0, 8: 20.0}, computes="float32"),
            "openvino/float32": ceiling({1: 25.0, 8: 45.0}),
            "openvino/int8": refused("refused (onemodel prepare exit 3): agreement 91% < 99%"),
            "openvino/bfloat16": ceiling({1: 25.0, 8: 46.0}),
        },
        {
            "tensorflow/float32": served({1: 9.0, 8: 19.0}, top1=None, pss_mib=900),
            "openvino/float32": served({1: 20.0, 8: ov_c8}, pss_mib=400),
            "openvino/int8": refused("refused (onemodel prepare exit 3): agreement 91% < 99%"),
        },
    )


def test_engine_rows_give_rates_ratios_memory_and_agreement() -> None:
    rows = {row[1] + "/" + row[2]: row for row in engine_rows(_small())}
    # TensorFlow first, then OpenVINO from the most to the least precise.
    expected = ["tensorflow/float32", "openvino/float32", "openvino/bfloat16", "openvino/int8"]
    assert list(rows) == expected
    tf, ov = rows["tensorflow/float32"], rows["openvino/float32"]
    assert all(len(row) == HEADERS_CELLS for row in rows.values())
    assert tf[4:10] == ["10.0", "20.0", "1.00 x", "9.00", "19.0", "0.95 x"]
    assert ov[3] == "f32"
    assert ov[4:10] == ["25.0", "45.0", "2.25 x", "20.0", "40.0", "2.00 x"]
    assert ov[10] == "400"
    assert ov[11] == "top-1 100%, max diff 1e-09"
    assert "refused" in str(rows["openvino/int8"][4])
    assert "agreement 91%" in str(rows["openvino/int8"][4])


def test_advice_picks_openvino_when_it_is_clearly_faster() -> None:
    text = engine_advice([_small(ov_c8=40.0)], {"cpu_flags_of_note": ["avx2"]})
    assert "efficientnetb0: **OpenVINO**" in text
    assert "2.11x TensorFlow's served rate at c=8" in text
    assert "400 MiB PSS against TensorFlow's 900 MiB" in text
    assert "no `avx512_bf16` or AMX" in text
    assert "Refused to serve (reason in the table): efficientnetb0 openvino/int8" in text


def test_advice_keeps_tensorflow_when_openvino_is_slower() -> None:
    text = engine_advice([_small(ov_c8=12.0)], {"cpu_flags_of_note": ["avx512_bf16"]})
    assert "efficientnetb0: **TensorFlow**" in text
    assert "no `avx512_bf16`" not in text


def test_advice_says_either_when_the_engines_are_close() -> None:
    text = engine_advice([_small(ov_c8=20.0)], {"cpu_flags_of_note": []})
    assert "either engine for speed (1.05x" in text


def test_engine_cpu_rows_separate_the_model_server_from_the_web_tier() -> None:
    rows = engine_cpu_rows(_small())
    assert rows[0][:5] == ["efficientnetb0", "tensorflow/float32", 1, "9.0", "2.8"]
    assert "decoder 0.8" in str(rows[0][5])


def test_engines_section_renders_as_markdown() -> None:
    lines = engines_lines(results(_small()), markdown=True)
    text = "\n".join(lines)
    assert "| model | engine | precision | computes |" in text
    assert "CPU flags of note: avx2" in text
    assert engines_lines(results(), markdown=True) == []


def test_cpu_table_shows_the_web_tier_of_onemodel_only() -> None:
    point = served({16: 500.0})["points"][0]
    tutorial_point = {**point, "cpu_ms_per_request": {"web": 2.0, "manager": 2.0}}
    del tutorial_point["web_tier_cpu_ms_per_request"]
    classic = {
        "systems": {
            "tutorial": {"points": [tutorial_point]},
            "onemodel": {"config": {"workers": 4, "threads": 8}, "points": [point]},
        }
    }
    rows = cpu_rows(classic)
    assert rows[0][0] == "tutorial" and rows[0][3] == "-"
    assert rows[1][0] == "onemodel 4x8" and rows[1][3] == "2.8"
