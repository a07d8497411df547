"""The performance targets, evaluated on a run's results as met, missed or not measured."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Results = dict[str, Any]
MIB = 2**20
# Above this share of the machine used by other work, a timing verdict is flagged unreliable.
NOISY_OTHER_CPU = 0.15


@dataclass(frozen=True)
class Verdict:
    """One target: what it asks, what was measured, and whether it holds (None: not measured)."""

    name: str
    wanted: str
    measured: str
    met: bool | None
    # The most CPU other work used while any timing behind this verdict was measured.
    other_cpu_share: float | None = None

    @property
    def reliable(self) -> bool:
        """Return False when other work disturbed a timing this verdict rests on."""
        return self.other_cpu_share is None or self.other_cpu_share <= NOISY_OTHER_CPU

    def as_dict(self) -> dict[str, Any]:
        """Return the verdict as plain JSON data."""
        return dict(self.__dict__)


class Lookup:
    """Find figures in a run's results by model, precision, system, upload and concurrency."""

    def __init__(self, results: Results) -> None:
        self._panels = {(p["model"], p["precision"]): p for p in results.get("panels", [])}
        self.other_cpu: list[float] = []  # of every timing looked up since the last reset

    def ceiling(self, model: str, precision: str, batch: int) -> dict[str, Any] | None:
        """Return the ceiling figures at one batch size."""
        ceiling = self._panels.get((model, precision), {}).get("ceiling", {})
        found = next((b for b in ceiling.get("batches", []) if b["batch"] == batch), None)
        if found is not None and "other_cpu_share" in ceiling:
            self.other_cpu.append(ceiling["other_cpu_share"])
        return found

    def ceiling_rss(self, model: str, precision: str) -> int | None:
        """Return the RSS of the ceiling process."""
        return self._panels.get((model, precision), {}).get("ceiling", {}).get("rss_bytes")

    def point(
        self, model: str, precision: str, system: str, concurrency: int, upload: str = "224"
    ) -> dict[str, Any] | None:
        """Return one served measurement."""
        served = self._system(model, precision, system)
        found = next(
            (
                p
                for p in served.get("points", [])
                if p["concurrency"] == concurrency and p["upload"] == upload
            ),
            None,
        )
        if found is not None and "other_cpu_share" in found:
            self.other_cpu.append(found["other_cpu_share"])
        return found

    def memory(self, model: str, precision: str, system: str) -> dict[str, Any] | None:
        """Return the process-tree memory of a served system."""
        return self._system(model, precision, system).get("memory")

    def _system(self, model: str, precision: str, system: str) -> dict[str, Any]:
        return self._panels.get((model, precision), {}).get("systems", {}).get(system, {})


def evaluate(results: Results) -> list[Verdict]:
    """Evaluate every target the brief sets, noting how much other work disturbed each."""
    find = Lookup(results)
    # An engines-only run (make bench-engines) has no classic panels to judge.
    targets = _vgg16_targets(find) + _tiny_targets(find) if results.get("panels") else []
    if any(p["precision"] == "bfloat16" for p in results.get("panels", [])):
        targets += _bf16_targets(find)
    targets += engine_targets(EngineLookup(results, find.other_cpu))
    verdicts = []
    for target in targets:
        find.other_cpu.clear()
        verdict = target()
        noise = max(find.other_cpu) if find.other_cpu else None
        verdicts.append(dataclasses.replace(verdict, other_cpu_share=noise))
    return verdicts


Target = Callable[[], Verdict]


def _vgg16_targets(find: Lookup) -> list[Target]:
    model, precision = "vgg16", "float32"
    return [
        lambda: _ratio_to_ceiling(find, model, precision, 8, 0.97),
        lambda: _ratio_to_ceiling(find, model, precision, 16, 0.95),
        lambda: _ratio(
            "VGG16 224: onemodel c=8 vs tutorial c=8",
            1.6,
            _rate(find.point(model, precision, "onemodel", 8)),
            _rate(find.point(model, precision, "tutorial", 8)),
            "tutorial",
        ),
        lambda: _p50_within(find, model, precision, 10.0, "VGG16 224: onemodel p50 c=1"),
        lambda: _memory_ratio(
            "VGG16: onemodel total RSS vs ceiling process RSS",
            1.2,
            _rss(find.memory(model, precision, "onemodel")),
            find.ceiling_rss(model, precision),
            "ceiling",
        ),
        lambda: _memory_ratio(
            "VGG16: onemodel total RSS vs naive total RSS",
            0.3,
            _rss(find.memory(model, precision, "onemodel")),
            _rss(find.memory(model, precision, "naive")),
            "naive",
        ),
    ]


def _tiny_targets(find: Lookup) -> list[Target]:
    def p50() -> Verdict:
        c1 = find.point("tiny", "float32", "onemodel", 1)
        value = c1["latency_ms"]["p50"] if c1 else None
        name = "tiny 224: onemodel p50 c=1"
        return _verdict(name, "<= 5 ms", value, lambda v: v <= 5.0, "{:.2f} ms")

    def rate() -> Verdict:
        value = _rate(find.point("tiny", "float32", "onemodel", 8))
        name = "tiny 224: onemodel c=8"
        return _verdict(name, ">= 450 req/s", value, lambda v: v >= 450, "{:.0f} req/s")

    return [p50, rate]


def _bf16_targets(find: Lookup) -> list[Target]:
    model = "vgg16"

    def speedup() -> Verdict:
        bf16 = find.ceiling(model, "bfloat16", 8)
        fp32 = find.ceiling(model, "float32", 8)
        return _ratio(
            "VGG16 ceiling b=8: bfloat16 vs float32",
            3.5,
            bf16["images_per_s"] if bf16 else None,
            fp32["images_per_s"] if fp32 else None,
            "float32 ceiling",
        )

    return [
        speedup,
        lambda: _ratio_to_ceiling(find, model, "bfloat16", 8, 0.85),
        lambda: _ratio_to_ceiling(find, model, "bfloat16", 16, 0.85),
        lambda: _p50_within(find, model, "bfloat16", 10.0, "VGG16 224 bfloat16: onemodel p50 c=1"),
    ]


def _ratio_to_ceiling(
    find: Lookup, model: str, precision: str, size: int, factor: float
) -> Verdict:
    ceiling = find.ceiling(model, precision, size)
    label = "VGG16 224" if precision == "float32" else f"VGG16 224 {precision}"
    return _ratio(
        f"{label}: onemodel c={size} vs ceiling b={size}",
        factor,
        _rate(find.point(model, precision, "onemodel", size)),
        ceiling["images_per_s"] if ceiling else None,
        f"ceiling b={size}",
    )


def _p50_within(find: Lookup, model: str, precision: str, slack_ms: float, name: str) -> Verdict:
    point = find.point(model, precision, "onemodel", 1)
    ceiling = find.ceiling(model, precision, 1)
    wanted = f"<= ceiling b=1 p50 + {slack_ms:g} ms"
    if point is None or ceiling is None:
        return Verdict(name, wanted, "not measured", None)
    p50, limit = point["latency_ms"]["p50"], ceiling["latency_ms_p50"] + slack_ms
    measured = (
        f"{p50:.1f} ms (ceiling b=1 p50 {ceiling['latency_ms_p50']:.1f} ms, limit {limit:.1f})"
    )
    return Verdict(name, wanted, measured, p50 <= limit)


def _ratio(
    name: str, factor: float, value: float | None, reference: float | None, what: str
) -> Verdict:
    wanted = f">= {factor:g} x {what}"
    if value is None or not reference:
        return Verdict(name, wanted, "not measured", None)
    ratio = value / reference
    measured = f"{value:.2f} vs {reference:.2f} img/s = {ratio:.2f} x"
    return Verdict(name, wanted, measured, ratio >= factor)


def _memory_ratio(
    name: str, factor: float, value: int | None, reference: int | None, what: str
) -> Verdict:
    wanted = f"<= {factor:g} x {what}"
    if value is None or not reference:
        return Verdict(name, wanted, "not measured", None)
    ratio = value / reference
    measured = f"{value / MIB:.0f} vs {reference / MIB:.0f} MiB = {ratio:.2f} x"
    return Verdict(name, wanted, measured, ratio <= factor)


def _verdict(
    name: str, wanted: str, value: float | None, check: Callable[[float], bool], fmt: str
) -> Verdict:
    if value is None:
        return Verdict(name, wanted, "not measured", None)
    return Verdict(name, wanted, fmt.format(value), check(value))


def _rate(point: dict[str, Any] | None) -> float | None:
    return point["images_per_s"] if point else None


def _rss(memory: dict[str, Any] | None) -> int | None:
    return memory["rss_bytes"] if memory else None


# --- engine panels ------------------------------------------------------------------------

SMALL_MODEL = "efficientnetb0"
TENSORFLOW = "tensorflow/float32"
ENGINE_CONCURRENCY = 8


class EngineLookup:
    """Find figures in a run's engine panels by model and engine/precision key."""

    def __init__(self, results: Results, other_cpu: list[float]) -> None:
        self._panels = {p["model"]: p for p in results.get("engines", [])}
        self.other_cpu = other_cpu  # shared with Lookup: evaluate() reads it per target

    def has(self, model: str) -> bool:
        """Return whether the run has an engine panel for the model."""
        return model in self._panels

    def planned(self, model: str, key: str) -> bool:
        """Return whether the model's panel meant to serve this engine and precision."""
        return key in self._panels.get(model, {}).get("served", {})

    def ceiling_rate(self, model: str, key: str, batch: int) -> float | None:
        """Return a ceiling's img/s at one batch size, over all its timed windows."""
        entry = self._panels.get(model, {}).get("ceilings", {}).get(key, {})
        found = next((b for b in entry.get("batches", []) if b["batch"] == batch), None)
        if found is None:
            return None
        self.other_cpu.append(found["other_cpu_share"])
        return float(found["images_per_s"])

    def ceiling(self, model: str, key: str) -> dict[str, Any]:
        """Return a ceiling's entry ({} when not measured)."""
        found: dict[str, Any] = self._panels.get(model, {}).get("ceilings", {}).get(key, {})
        return found

    def served(self, model: str, key: str) -> dict[str, Any]:
        """Return a served engine's entry ({} when not measured)."""
        found: dict[str, Any] = self._panels.get(model, {}).get("served", {}).get(key, {})
        return found

    def point(self, model: str, key: str, concurrency: int) -> dict[str, Any] | None:
        """Return one served point of an engine at a concurrency."""
        points = self.served(model, key).get("points", [])
        found = next((p for p in points if p["concurrency"] == concurrency), None)
        if found is not None and "other_cpu_share" in found:
            self.other_cpu.append(found["other_cpu_share"])
        return found


def computes_in(ceiling: dict[str, Any], served: dict[str, Any]) -> str:
    """Return what OpenVINO reported it computes in ("f32", "bf16"; "" when unknown)."""
    reported = ceiling.get("ready", {}).get("inference_precision", "")
    if reported:
        return str(reported)
    reason = str(served.get("ready_info", {}).get("engine_reason", ""))
    return "f32" if "no bfloat16 units" in reason else ""


def engine_targets(find: EngineLookup) -> list[Target]:
    """Return the engine targets of issue 11 for the models the run measured."""
    targets: list[Target] = []
    if find.planned(SMALL_MODEL, "openvino/float32"):
        targets.append(lambda: _served_vs_tensorflow(find, "float32", 1.8))
    if find.planned(SMALL_MODEL, "openvino/bfloat16"):
        targets.append(lambda: _served_vs_tensorflow(find, "bfloat16", 3.0))
    if find.has("vgg16"):
        targets.append(lambda: _deployment_memory(find))
    return targets


def _served_vs_tensorflow(find: EngineLookup, precision: str, factor: float) -> Verdict:
    """The small model served on OpenVINO at 8 clients against TF's in-process ceiling b=8."""
    key = f"openvino/{precision}"
    name = f"{SMALL_MODEL} 224: onemodel {key} c=8 vs TensorFlow ceiling b=8"
    wanted = f">= {factor:g} x, identical top-1" if precision == "float32" else f">= {factor:g} x"
    point = find.point(SMALL_MODEL, key, ENGINE_CONCURRENCY)
    reference = find.ceiling_rate(SMALL_MODEL, TENSORFLOW, 8)
    served = find.served(SMALL_MODEL, key)
    if point is None or not reference:
        why = served.get("error") or find.ceiling(SMALL_MODEL, key).get("error") or ""
        measured = f"not measured: {_first_line(why)}" if why else "not measured"
        return Verdict(name, wanted, measured, None)
    ratio = point["images_per_s"] / reference
    measured = f"{point['images_per_s']:.2f} vs {reference:.2f} img/s = {ratio:.2f} x"
    agreement = served.get("ready_info", {}).get("agreement")
    if precision == "float32":
        if not agreement:
            return Verdict(name, wanted, measured + "; agreement not reported", None)
        top1 = float(agreement["top1"])
        measured += (
            f"; conversion top-1 {top1:.0%} on {agreement['images']} inputs, max |diff| "
            f"{agreement['max_abs_diff']:.2g}"
        )
        return Verdict(name, wanted, measured, ratio >= factor and top1 == 1.0)
    computed = computes_in(find.ceiling(SMALL_MODEL, key), served)
    if computed and "bf16" not in computed:
        note = f"not measurable: CPU has no bf16 units (OpenVINO computes {computed}); "
        return Verdict(name, wanted, note + measured, None)
    return Verdict(name, wanted, measured, ratio >= factor)


def _deployment_memory(find: EngineLookup) -> Verdict:
    """VGG16's whole OpenVINO deployment against TensorFlow's one process holding VGG16."""
    name = "VGG16: onemodel openvino/float32 deployment PSS vs TensorFlow ceiling process"
    wanted = "<= 0.8 x (PSS)"
    memory = find.served("vgg16", "openvino/float32").get("memory")
    reference = find.ceiling("vgg16", TENSORFLOW).get("memory")
    if not memory or not reference:
        return Verdict(name, wanted, "not measured", None)
    ratio = memory["pss_bytes"] / reference["pss_bytes"]
    measured = (
        f"{memory['pss_bytes'] / MIB:.0f} vs {reference['pss_bytes'] / MIB:.0f} MiB = "
        f"{ratio:.2f} x (RSS: {memory['rss_bytes'] / MIB:.0f} vs "
        f"{reference['rss_bytes'] / MIB:.0f} MiB)"
    )
    return Verdict(name, wanted, measured, ratio <= 0.8)


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:160] if lines else ""
