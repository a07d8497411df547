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
    targets = _vgg16_targets(find) + _tiny_targets(find)
    if any(p["precision"] == "bfloat16" for p in results.get("panels", [])):
        targets += _bf16_targets(find)
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
