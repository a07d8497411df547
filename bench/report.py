"""Render a run's results: terminal table, JSON files, markdown summary, docs page, PNG chart."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pool_report
from targets import NOISY_OTHER_CPU, TENSORFLOW, Verdict, computes_in

BENCH = Path(__file__).resolve().parent
DOCS = BENCH.parent / "docs"
MIB = 2**20
GIB = 2**30
SYSTEM_ORDER = ("tutorial", "naive", "onemodel")
COLORS = {"ceiling": "black", "tutorial": "tab:orange", "naive": "tab:red", "onemodel": "tab:blue"}
UPLOAD_STYLES = {"224": "-", "large": "--"}


# --- tables ---------------------------------------------------------------------------


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return a fixed-width text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return a GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


RATE_MARKS = {"steady": "", "littles_law": " †", "counted": " *"}
PERF_HEADERS = (
    "system",
    "upload",
    "c / batch",
    "img/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors",
    "other CPU",
)


def perf_rows(panel: dict[str, Any]) -> list[list[object]]:
    """Return the throughput/latency rows of one panel: ceiling batches, then each system."""
    rows: list[list[object]] = []
    ceiling = panel.get("ceiling", {})
    if "error" in ceiling:
        rows.append(["ceiling", "-", "-", "failed", "-", "-", "-", "-", "-"])
    for batch in ceiling.get("batches", []):
        rows.append(
            [
                "ceiling",
                "-",
                f"b={batch['batch']}",
                _num(batch["images_per_s"]),
                _num(batch["latency_ms_p50"]),
                _num(batch["latency_ms_p95"]),
                _num(batch["latency_ms_p99"]),
                "-",
                _percent(ceiling.get("other_cpu_share")),
            ]
        )
    for name in SYSTEM_ORDER:
        served = panel.get("systems", {}).get(name)
        if served is None:
            continue
        if "error" in served:
            rows.append([name, "-", "-", "failed: " + _first_line(served["error"]), *["-"] * 5])
            continue
        for point in served.get("points", []):
            latency = point["latency_ms"]
            mark = RATE_MARKS.get(point.get("rate_method", ""), "")
            rows.append(
                [
                    _system_label(name, served),
                    point["upload"],
                    f"c={point['concurrency']}",
                    _num(point["images_per_s"]) + mark,
                    _num(latency["p50"]),
                    _num(latency["p95"]),
                    _num(latency["p99"]),
                    point["errors"],
                    _percent(point.get("other_cpu_share")),
                ]
            )
    return rows


MEMORY_HEADERS = ("system", "total RSS MiB", "total PSS MiB", "RSS by role (MiB)")


def memory_rows(panel: dict[str, Any]) -> list[list[object]]:
    """Return the memory rows of one panel (RSS summed over unique pids, measured after load)."""
    rows: list[list[object]] = []
    ceiling = panel.get("ceiling", {})
    if "rss_bytes" in ceiling:
        rows.append(
            [
                "ceiling (1 process)",
                _mib(ceiling["rss_bytes"]),
                _mib(ceiling["pss_bytes"]),
                f"process {_mib(ceiling['rss_bytes'])}",
            ]
        )
    for name in SYSTEM_ORDER:
        memory = panel.get("systems", {}).get(name, {}).get("memory")
        if memory:
            rows.append(
                [
                    _system_label(name, panel["systems"][name]),
                    _mib(memory["rss_bytes"]),
                    _mib(memory["pss_bytes"]),
                    _roles(memory["roles"]),
                ]
            )
    return rows


CPU_HEADERS = (
    "system",
    "upload",
    "c",
    "web tier ms",
    "CPU ms per request, by process role",
)


def cpu_rows(panel: dict[str, Any]) -> list[list[object]]:
    """Return where CPU time went per request at each system's highest concurrency.

    ``web tier``: onemodel's Gunicorn master, workers and their decoder processes together,
    everything but the model server.
    """
    rows: list[list[object]] = []
    for name in SYSTEM_ORDER:
        served = panel.get("systems", {}).get(name, {})
        points = served.get("points", [])
        for upload in dict.fromkeys(p["upload"] for p in points):
            top = max((p for p in points if p["upload"] == upload), key=lambda p: p["concurrency"])
            rows.append([_system_label(name, served), upload, top["concurrency"], *_cpu_cells(top)])
    return rows


def _cpu_cells(point: dict[str, Any]) -> list[str]:
    web = point.get("web_tier_cpu_ms_per_request")
    by_role = ", ".join(f"{role} {ms:.1f}" for role, ms in point["cpu_ms_per_request"].items())
    return ["-" if web is None else f"{web:.1f}", by_role]


SWEEP_HEADERS = (
    "model",
    "workers",
    "threads",
    "c",
    "img/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors",
    "total RSS MiB",
)


def sweep_rows(sweep: list[dict[str, Any]]) -> list[list[object]]:
    """Return one row per onemodel web-tier shape tried."""
    rows: list[list[object]] = []
    for entry in sweep:
        head = [
            f"{entry['model']}/{entry['precision']}",
            entry["workers"],
            entry["threads"],
            entry["concurrency"],
        ]
        if "error" in entry:
            rows.append([*head, "failed: " + _first_line(entry["error"]), "-", "-", "-", "-", "-"])
            continue
        point, latency = entry["point"], entry["point"]["latency_ms"]
        rows.append(
            [
                *head,
                _num(point["images_per_s"]),
                _num(latency["p50"]),
                _num(latency["p95"]),
                _num(latency["p99"]),
                point["errors"],
                _mib(entry["memory"]["rss_bytes"]),
            ]
        )
    return rows


TARGET_HEADERS = ("target", "wanted", "measured", "verdict")


def target_rows(verdicts: list[Verdict]) -> list[list[object]]:
    """Return one row per target with its verdict."""
    words = {True: "met", False: "**missed**", None: "not measured"}
    rows: list[list[object]] = []
    for verdict in verdicts:
        word = words[verdict.met]
        if verdict.met is not None and not verdict.reliable:
            share = 100 * (verdict.other_cpu_share or 0.0)
            word += f" (unreliable: other work used {share:.0f}% CPU)"
        rows.append([verdict.name, verdict.wanted, verdict.measured, word])
    return rows


ENGINE_HEADERS = (
    "model",
    "engine",
    "precision",
    "computes",
    "ceiling b=1 img/s",
    "ceiling b=8 img/s",
    "b=8 vs TF",
    "served c=1 img/s",
    "served c=8 img/s",
    "c=8 vs TF ceiling b=8",
    "PSS MiB",
    "vs Keras f32",
    "other CPU",
)
ENGINE_CPU_HEADERS = ("model", "served", "c", "model server ms", "web tier ms", "by role (ms)")


def engine_keys(panel: dict[str, Any]) -> list[str]:
    """Return the panel's engine/precision keys: TensorFlow first, then OpenVINO's."""
    keys = dict.fromkeys([*panel.get("ceilings", {}), *panel.get("served", {})])
    order = ("float32", "bfloat16", "int8")

    def rank(key: str) -> tuple[bool, int, str]:
        precision = key.partition("/")[2]
        return key != TENSORFLOW, order.index(precision) if precision in order else 9, key

    return sorted(keys, key=rank)


def engine_rows(panel: dict[str, Any]) -> list[list[object]]:
    """Return one row per engine and precision: its ceilings, served rates, ratios and PSS."""
    rows: list[list[object]] = []
    reference = _ceiling_rate(panel.get("ceilings", {}).get(TENSORFLOW, {}), 8)
    for key in engine_keys(panel):
        engine, precision = key.split("/")
        ceiling = panel.get("ceilings", {}).get(key, {})
        served = panel.get("served", {}).get(key, {})
        error = ceiling.get("error") if ceiling.get("refused") else None
        if error:
            reason = _first_line(error)
            reason = reason if len(reason) <= 70 else reason[:69] + "…"
            rows.append([panel["model"], engine, precision, "-", f"refused: {reason}"])
            rows[-1] += ["-"] * (len(ENGINE_HEADERS) - len(rows[-1]))
            continue
        b1, b8 = _ceiling_rate(ceiling, 1), _ceiling_rate(ceiling, 8)
        c1, c8 = _served_rate(served, 1), _served_rate(served, 8)
        memory = served.get("memory") or {}
        shares = [m.get("other_cpu_share") for m in ceiling.get("measurements", [])]
        shares += [p.get("other_cpu_share") for p in served.get("points", [])]
        known = [share for share in shares if share is not None]
        rows.append(
            [
                panel["model"],
                engine,
                precision,
                computes_in(ceiling, served) or ("f32" if engine == "tensorflow" else "?"),
                _cell(b1, ceiling),
                _cell(b8, ceiling),
                _times(b8, reference) if key != TENSORFLOW else "1.00 x",
                _cell(c1, served),
                _cell(c8, served),
                _times(c8, reference),
                _mib(memory["pss_bytes"]) if memory else "-",
                _agreement(served.get("ready_info", {}).get("agreement")),
                _percent(max(known)) if known else "-",
            ]
        )
    return rows


def engine_cpu_rows(panel: dict[str, Any]) -> list[list[object]]:
    """Return the CPU per request of every served engine at each concurrency."""
    rows: list[list[object]] = []
    for key in engine_keys(panel):
        for point in panel.get("served", {}).get(key, {}).get("points", []):
            by_role = point["cpu_ms_per_request"]
            rows.append(
                [
                    panel["model"],
                    key,
                    point["concurrency"],
                    f"{by_role.get('model_server', 0.0):.1f}",
                    *_cpu_cells(point),
                ]
            )
    return rows


def engine_advice(panels: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """Return a short paragraph, from the numbers, saying which engine to use for which model."""
    sentences = []
    for panel in panels:
        model = panel["model"]
        tf = _served_rate(panel.get("served", {}).get(TENSORFLOW, {}), 8)
        ov_entry = panel.get("served", {}).get("openvino/float32", {})
        ov = _served_rate(ov_entry, 8)
        ceiling_tf = _ceiling_rate(panel.get("ceilings", {}).get(TENSORFLOW, {}), 8)
        ceiling_ov = _ceiling_rate(panel.get("ceilings", {}).get("openvino/float32", {}), 8)
        speed = _speed_ratio(ov, tf, ceiling_ov, ceiling_tf)
        if speed is None:
            continue
        ratio, what = speed
        if ratio >= 1.2:
            verdict = f"**OpenVINO** (the default `auto`): {ratio:.2f}x TensorFlow's {what}"
        elif ratio >= 0.9:
            verdict = (
                f"either engine for speed ({ratio:.2f}x TensorFlow's {what}); OpenVINO for "
                "its memory and its start without TensorFlow"
            )
        else:
            verdict = (
                f"**TensorFlow** (`MODEL_ENGINE=tensorflow`): OpenVINO reached {ratio:.2f}x "
                f"TensorFlow's {what}"
            )
        memory = _memory_note(panel)
        sentences.append(f"{model}: {verdict}{memory}.")
    noise = max((_panel_noise(panel) for panel in panels), default=0.0)
    if noise > NOISY_OTHER_CPU:
        sentences.append(
            f"Read these with care: other work used up to {100 * noise:.0f}% of the machine's "
            "CPU while they were measured."
        )
    flags = set(machine.get("cpu_flags_of_note", []))
    if flags & {"avx512_bf16", "amx_bf16"}:
        sentences.append(
            "bfloat16: this CPU has bfloat16 units; see the bfloat16 rows for what they gain."
        )
    else:
        sentences.append(
            "bfloat16 cannot help on this CPU: it has no `avx512_bf16` or AMX, so OpenVINO "
            "computes a `bf16` hint in f32 (the bfloat16 rows measure f32 again)."
        )
    refused = sorted(
        {
            f"{panel['model']} {key}"
            for panel in panels
            for key, entry in panel.get("ceilings", {}).items()
            if entry.get("refused")
        }
    )
    if refused:
        sentences.append(f"Refused to serve (reason in the table): {', '.join(refused)}.")
    return " ".join(sentences)


def _panel_noise(panel: dict[str, Any]) -> float:
    shares = [
        float(m.get("other_cpu_share") or 0.0)
        for entry in panel.get("ceilings", {}).values()
        for m in entry.get("measurements", [])
    ]
    shares += [
        float(p.get("other_cpu_share") or 0.0)
        for entry in panel.get("served", {}).values()
        for p in entry.get("points", [])
    ]
    return max(shares, default=0.0)


def _speed_ratio(
    ov: float | None, tf: float | None, ceiling_ov: float | None, ceiling_tf: float | None
) -> tuple[float, str] | None:
    if ov and tf:
        return ov / tf, "served rate at c=8"
    if ceiling_ov and ceiling_tf:
        return ceiling_ov / ceiling_tf, "in-process rate at batch 8"
    return None


def _memory_note(panel: dict[str, Any]) -> str:
    served = panel.get("served", {})
    tf = (served.get(TENSORFLOW) or {}).get("memory")
    ov = (served.get("openvino/float32") or {}).get("memory")
    if not tf or not ov:
        return ""
    return (
        f", its whole deployment {_mib(ov['pss_bytes'])} MiB PSS against TensorFlow's "
        f"{_mib(tf['pss_bytes'])} MiB"
    )


def _ceiling_rate(entry: dict[str, Any], batch: int) -> float | None:
    found = next((b for b in entry.get("batches", []) if b["batch"] == batch), None)
    return None if found is None else float(found["images_per_s"])


def _served_rate(entry: dict[str, Any], concurrency: int) -> float | None:
    points = entry.get("points", [])
    found = next((p for p in points if p["concurrency"] == concurrency), None)
    return None if found is None else float(found["images_per_s"])


def _cell(value: float | None, entry: dict[str, Any]) -> str:
    if value is not None:
        return _num(value)
    return "failed" if entry.get("error") else "-"


def _times(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f} x" if value is not None and reference else "-"


def _agreement(agreement: dict[str, Any] | None) -> str:
    if not agreement:
        return "-"
    return f"top-1 {float(agreement['top1']):.0%}, max diff {float(agreement['max_abs_diff']):.1g}"


def engines_lines(results: dict[str, Any], markdown: bool) -> list[str]:
    """Return the engine panels' section: conditions, the table, CPU, the advice paragraph."""
    panels = results.get("engines", [])
    if not panels:
        return []
    table = markdown_table if markdown else text_table
    first = panels[0]
    machine = results["meta"]["machine"]
    lines = [
        "Engine panels: each model on TensorFlow float32 and OpenVINO at each precision. "
        "The ceilings (one process per engine, the model loaded by onemodel's own "
        "`load_for_serving`, so OpenVINO's is the cached, verified model onemodel serves, "
        f"compiled with the same precision hint) ran {_rounds(first['rounds'])} of "
        f"{first['ceiling_duration_s']:g} s per engine and batch size, engines in turn; "
        "TensorFlow's b=8 was timed again between the served rounds and its figure covers "
        "every window. Served: onemodel on each engine, the deployments up side by side "
        f"and measured point after point in turn ({_engine_durations(panels)} per point, "
        f"{first['upload']} JPEG). PSS: the whole deployment after its load. `computes`: "
        "the precision OpenVINO reports (`INFERENCE_PRECISION_HINT` after compiling). "
        "`vs Keras f32`: the conversion agreement /readyz reports. CPU flags of note: "
        f"{', '.join(machine.get('cpu_flags_of_note', [])) or 'none'}; load average "
        f"{_load(first['load_average_start'])} at the start of the first panel, "
        f"{_load(panels[-1].get('load_average_end', []))} at the end of the last.",
        "",
        table(ENGINE_HEADERS, [row for panel in panels for row in engine_rows(panel)]),
        "",
        engine_advice(panels, machine),
    ]
    cpu = [row for panel in panels for row in engine_cpu_rows(panel)]
    if cpu:
        lines += ["", table(ENGINE_CPU_HEADERS, cpu)]
    return lines


def _rounds(count: int) -> str:
    return "1 round" if count == 1 else f"{count} interleaved rounds"


def _engine_durations(panels: list[dict[str, Any]]) -> str:
    return ", ".join(f"{p['duration_s']:g} s ({p['model']})" for p in panels)


# --- outputs ----------------------------------------------------------------------------


def terminal_report(results: dict[str, Any], verdicts: list[Verdict]) -> str:
    """Return the whole report as plain text for the terminal."""
    parts = []
    for panel in results["panels"]:
        title = f"{panel['model']} / {panel['precision']}"
        parts += [
            f"\n=== {title}: throughput and latency",
            text_table(PERF_HEADERS, perf_rows(panel)),
        ]
        parts += [
            f"\n=== {title}: memory after load",
            text_table(MEMORY_HEADERS, memory_rows(panel)),
        ]
    if results.get("engines"):
        parts += ["\n=== engines", *engines_lines(results, markdown=False)]
    if results.get("sweep"):
        parts += [
            "\n=== onemodel web-tier sweep",
            text_table(SWEEP_HEADERS, sweep_rows(results["sweep"])),
        ]
    parts += pool_report.text_lines(results.get("pool"), text_table)
    plain = [[*row[:3], str(row[3]).replace("*", "")] for row in target_rows(verdicts)]
    parts += ["\n=== targets", text_table(TARGET_HEADERS, plain)]
    return "\n".join(parts)


def markdown_report(results: dict[str, Any], verdicts: list[Verdict]) -> str:
    """Return the markdown summary written next to the JSON (bench/results/latest.md)."""
    lines = ["## Benchmark", "", *_summary_lines(results, verdicts, chart="latest.png")]
    return "\n".join(lines)


def benchmarks_page(
    results: dict[str, Any], verdicts: list[Verdict], page: Path, chart: Path
) -> str:
    """Return the documentation page (docs/benchmarks.md) for a run; links are page-relative."""
    meta = results["meta"]
    link = _link_from(page)
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/report.py from the run in bench/results/latest.json: `make bench`"
        " measures and rewrites it, `python bench/run.py --from-json bench/results/latest.json`"
        " re-renders it without measuring. Edit the generator, not this file. -->",
        "",
        "onemodel against its baselines on one machine: `ceiling` (`predict_on_batch` in one "
        "process, no HTTP), `tutorial` (the tutorial's design: one Flask process, the model in "
        "a `multiprocessing` manager behind a lock, one image per model call), `naive` "
        "(Gunicorn with 4 sync workers, a model copy in each) and onemodel. `make bench` starts "
        f"every system itself, drives it with wrk on 127.0.0.1 (this run took "
        f"{meta['elapsed_s'] / 60:.0f} minutes; `make bench-quick` takes under 4) and rewrites "
        f"this page; [bench/README.md]({link(BENCH / 'README.md')}) explains the method and "
        "the options. Why the missed targets are missed on this machine, and what batching and "
        f"bfloat16 gain: [performance.md]({link(DOCS / 'performance.md')}). TensorFlow or "
        "OpenVINO, per model and precision: the engines section below (`make bench-engines` "
        f"measures only it) and [engines.md]({link(DOCS / 'engines.md')}).",
        "",
        "## Latest run",
        "",
        *_summary_lines(results, verdicts, chart=link(chart)),
    ]
    return "\n".join(lines)


def _summary_lines(results: dict[str, Any], verdicts: list[Verdict], chart: str) -> list[str]:
    """Return the run's conditions, its targets, its tables and the chart, as markdown lines."""
    meta = results["meta"]
    box = meta["machine"]
    lines = [
        f"Measured {meta['finished_at']} ({meta['mode']} mode, `python bench/run.py"
        f"{' --quick' if meta['mode'] == 'quick' else ''}`) on {box['cpu_model']}, "
        f"{box['cores']} cores, {box['ram_bytes'] / GIB:.0f} GiB RAM ({box['os']}, Python "
        f"{box['python']}; load average {_load(meta['load_average_start'])} at start, "
        f"{_load(meta['load_average_end'])} at end). Versions: {_versions(meta['versions'])}.",
        "",
        f"Each served point runs wrk for {_durations(results)} with `threads = min(c, 2)`, "
        "`connections = c`, posting one JPEG as multipart field `file` to 127.0.0.1. img/s "
        "is the steady-state completion rate: from the first completion after the first "
        "round and after 20 % of the run, over a whole number of rounds of c completions "
        "(`†`: too few completions, c / mean latency instead; `*`: completed / duration). "
        "Latency percentiles are wrk's, over the whole run. The ceiling is "
        "`predict_on_batch` in one process on already decoded, preprocessed input "
        "(img/s = batch / mean call time). `224` is a 224x224 JPEG, `large` a 4000x3000 "
        f"JPEG. onemodel runs {meta['web_workers']} gthread workers x {meta['web_threads']} "
        "threads and one model server with its default batching settings. RSS is summed over "
        "the unique processes of each system's tree after its load (PSS counts shared pages "
        "once). `other CPU`: share of the machine's CPU used meanwhile by processes outside "
        "the measured system and wrk (the machine is shared).",
        "",
        "### Targets",
        "",
        markdown_table(TARGET_HEADERS, target_rows(verdicts)),
    ]
    for panel in results["panels"]:
        title = f"{panel['model']} / {panel['precision']}"
        lines += ["", f"### {title}", "", markdown_table(PERF_HEADERS, perf_rows(panel))]
        lines += ["", markdown_table(MEMORY_HEADERS, memory_rows(panel))]
        cpu = cpu_rows(panel)
        if cpu:
            lines += ["", markdown_table(CPU_HEADERS, cpu)]
    if results.get("engines"):
        lines += ["", "### Engines: TensorFlow or OpenVINO", "", *engines_lines(results, True)]
    if results.get("sweep"):
        lines += [
            "",
            "### onemodel web-tier shapes at c=16 (224 JPEG)",
            "",
            markdown_table(SWEEP_HEADERS, sweep_rows(results["sweep"])),
        ]
    if results["panels"]:
        lines += ["", f"![throughput and p95 latency]({chart})"]
    lines.append("")
    lines += pool_report.markdown_lines(results.get("pool"), markdown_table)
    return lines


def _link_from(page: Path) -> Callable[[Path], str]:
    """Return a function turning a path into a link relative to the page's folder."""
    folder = page.resolve().parent

    def link(target: Path) -> str:
        return Path(os.path.relpath(target.resolve(), folder)).as_posix()

    return link


def write_json(results: dict[str, Any], directory: Path, stamp: str) -> Path:
    """Write <stamp>.json and latest.json atomically; return the stamped path."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=False) + "\n"
    stamped = directory / f"{stamp}.json"
    for path in (stamped, directory / "latest.json"):
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)
    return stamped


def write_text(path: Path, text: str) -> None:
    """Write a text file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def plot(results: dict[str, Any], path: Path) -> None:
    """Draw throughput and p95 latency against concurrency, one row per model/precision."""
    import matplotlib  # noqa: PLC0415  (slow import, only when writing the chart)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = results["panels"]
    figure, axes = plt.subplots(len(panels), 2, figsize=(12, 3.8 * len(panels)), squeeze=False)
    for row, panel in enumerate(panels):
        _plot_panel(panel, axes[row][0], axes[row][1])
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_panel(panel: dict[str, Any], rate_axis: Any, latency_axis: Any) -> None:
    title = f"{panel['model']} / {panel['precision']}"
    batches = panel.get("ceiling", {}).get("batches", [])
    if batches:
        sizes = [b["batch"] for b in batches]
        style = {
            "color": COLORS["ceiling"],
            "linestyle": ":",
            "marker": "s",
            "label": "ceiling (batch)",
        }
        rate_axis.plot(sizes, [b["images_per_s"] for b in batches], **style)
        latency_axis.plot(sizes, [b["latency_ms_p95"] for b in batches], **style)
    for name in SYSTEM_ORDER:
        points = panel.get("systems", {}).get(name, {}).get("points", [])
        for upload in dict.fromkeys(p["upload"] for p in points):
            chosen = sorted(
                (p for p in points if p["upload"] == upload), key=lambda p: p["concurrency"]
            )
            style = {
                "color": COLORS[name],
                "linestyle": UPLOAD_STYLES.get(upload, "-"),
                "marker": "o",
                "label": f"{name} ({upload})",
            }
            xs = [p["concurrency"] for p in chosen]
            rate_axis.plot(xs, [p["images_per_s"] for p in chosen], **style)
            latency_axis.plot(xs, [p["latency_ms"]["p95"] for p in chosen], **style)
    for axis, label in ((rate_axis, "images/s"), (latency_axis, "p95 latency (ms)")):
        axis.set_title(f"{title}: {label}")
        axis.set_xlabel("concurrency (ceiling: batch size)")
        axis.set_ylabel(label)
        axis.set_xscale("log", base=2)
        axis.set_xticks([1, 4, 8, 16], labels=["1", "4", "8", "16"])
        axis.grid(True, alpha=0.3)
        axis.set_yscale("log")
    rate_axis.legend(fontsize=7)


# --- formatting -------------------------------------------------------------------------


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def _mib(value: int) -> str:
    return f"{value / MIB:.0f}"


def _roles(roles: dict[str, dict[str, int]]) -> str:
    parts = []
    for role, entry in sorted(roles.items()):
        count, total = entry["processes"], entry["rss_bytes"]
        if count > 1:
            parts.append(f"{role} {count} x {total / count / MIB:.0f} = {_mib(total)}")
        else:
            parts.append(f"{role} {_mib(total)}")
    return "; ".join(parts)


def _system_label(name: str, served: dict[str, Any]) -> str:
    config = served.get("config") or {}
    if name == "onemodel" and config:
        return f"onemodel {config['workers']}x{config['threads']}"
    return {"naive": "naive 4 sync", "tutorial": "tutorial"}.get(name, name)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:80] if text.strip() else "error"


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _versions(found: dict[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in found.items())


def _durations(results: dict[str, Any]) -> str:
    seen = {(p["model"], p["duration_s"]) for p in results["panels"]}
    return ", ".join(f"{seconds:g} s ({model})" for model, seconds in sorted(seen))
