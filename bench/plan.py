"""What a run measures: panels (model x precision), systems, uploads, concurrencies, sweep."""

from __future__ import annotations

from dataclasses import dataclass, field

CONCURRENCIES = (1, 4, 8, 16)
BATCHES = (1, 4, 8, 16)
SYSTEMS = ("tutorial", "naive", "onemodel")
# onemodel's web tier shapes tried at the sweep concurrency (workers, threads per worker).
SWEEP_TINY = ((2, 8), (2, 16), (4, 4), (4, 8), (4, 16))
SWEEP_VGG16 = ((2, 16), (4, 4), (4, 16))
SWEEP_CONCURRENCY = 16
# The tiny model's ceiling needs little time per batch size: thousands of calls a second.
TINY_CEILING_S = 1.5


@dataclass(frozen=True)
class SystemRun:
    """One served system in a panel: which uploads at which concurrencies."""

    system: str
    uploads: tuple[str, ...]
    concurrencies: tuple[int, ...]


@dataclass(frozen=True)
class Panel:
    """One model at one precision: the ceiling batches and the served systems."""

    model: str  # "tiny" or "vgg16"
    precision: str
    duration_s: float
    ceiling_batches: tuple[int, ...]
    systems: tuple[SystemRun, ...]

    @property
    def ceiling_duration_s(self) -> float:
        """Return the seconds the ceiling spends on each batch size."""
        return min(self.duration_s, TINY_CEILING_S) if self.model == "tiny" else self.duration_s

    @property
    def key(self) -> str:
        return f"{self.model}/{self.precision}"


@dataclass(frozen=True)
class SweepRun:
    """onemodel at one web-tier shape, one model, one concurrency."""

    model: str
    precision: str
    workers: int
    threads: int
    upload: str
    concurrency: int
    duration_s: float


@dataclass(frozen=True)
class Plan:
    """Everything one run measures, in order."""

    mode: str
    panels: tuple[Panel, ...]
    sweep: tuple[SweepRun, ...] = field(default=())


def build_plan(
    *,
    quick: bool,
    models: tuple[str, ...],
    precisions: tuple[str, ...],
    tiny_duration_s: float,
    vgg16_duration_s: float,
    sweep: bool,
    systems: tuple[str, ...] = SYSTEMS,
) -> Plan:
    """Return the quick plan (under 3 minutes) or the full plan (about 20 minutes)."""
    panels = []
    for model in models:
        duration = vgg16_duration_s if model == "vgg16" else tiny_duration_s
        for precision in precisions:
            builder = _quick_panel if quick else _full_panel
            panels.append(_only(builder(model, precision, duration), systems))
    runs: tuple[SweepRun, ...] = ()
    if sweep and not quick and "onemodel" in systems:
        runs = _sweep_runs(models, tiny_duration_s, vgg16_duration_s)
    return Plan(mode="quick" if quick else "full", panels=tuple(panels), sweep=runs)


def _only(panel: Panel, systems: tuple[str, ...]) -> Panel:
    kept = tuple(run for run in panel.systems if run.system in systems)
    return Panel(panel.model, panel.precision, panel.duration_s, panel.ceiling_batches, kept)


def _quick_panel(model: str, precision: str, duration_s: float) -> Panel:
    if model == "vgg16":
        # VGG16 is slow on a small CPU: only what the headline targets need.
        onemodel = SystemRun("onemodel", ("224",), (1, 8))
        return Panel(model, precision, duration_s, (1, 8), (onemodel,))
    systems = tuple(SystemRun(name, ("224",), CONCURRENCIES) for name in SYSTEMS)
    return Panel(model, precision, duration_s, BATCHES, systems)


def _full_panel(model: str, precision: str, duration_s: float) -> Panel:
    both = ("224", "large")
    if precision == "float32":
        systems = tuple(SystemRun(name, both, CONCURRENCIES) for name in SYSTEMS)
    else:
        # Reduced precision: the naive baseline's four copies add nothing new.
        systems = (
            SystemRun("tutorial", ("224",), CONCURRENCIES),
            SystemRun("onemodel", both, CONCURRENCIES),
        )
    return Panel(model, precision, duration_s, BATCHES, systems)


def _sweep_runs(
    models: tuple[str, ...], tiny_duration_s: float, vgg16_duration_s: float
) -> tuple[SweepRun, ...]:
    runs: list[SweepRun] = []
    if "tiny" in models:
        runs += [
            SweepRun("tiny", "float32", w, t, "224", SWEEP_CONCURRENCY, tiny_duration_s)
            for w, t in SWEEP_TINY
        ]
    if "vgg16" in models:
        runs += [
            SweepRun("vgg16", "float32", w, t, "224", SWEEP_CONCURRENCY, vgg16_duration_s)
            for w, t in SWEEP_VGG16
        ]
    return tuple(runs)
