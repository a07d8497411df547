"""What a run measures: panels (model x precision), engine panels, systems, sweep."""

from __future__ import annotations

from dataclasses import dataclass, field

CONCURRENCIES = (1, 4, 8, 16)
BATCHES = (1, 4, 8, 16)
SYSTEMS = ("tutorial", "naive", "onemodel")
# onemodel's web tier shapes tried at the sweep concurrency (workers, threads per worker),
# beside the panels' 4x8. VGG16 is bound by the model whatever the shape: one other shape
# shows it (4x4 and 4x16 were within noise of 2x16 in every earlier run).
SWEEP_TINY = ((2, 8), (2, 16), (4, 16))
SWEEP_VGG16 = ((2, 16),)
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
class EngineSystem:
    """One engine at one precision (onemodel's MODEL_ENGINE and MODEL_PRECISION)."""

    engine: str  # "tensorflow" or "openvino"
    precision: str  # "float32", "bfloat16" or "int8"

    @property
    def key(self) -> str:
        return f"{self.engine}/{self.precision}"


TENSORFLOW_FLOAT32 = EngineSystem("tensorflow", "float32")


@dataclass(frozen=True)
class EnginePanel:
    """One model on every engine and precision: interleaved ceilings, then served systems.

    Each ceiling is its own process, loaded through the model server's own loading path;
    ``rounds`` rounds time every batch size on every engine in turn. The served systems run
    side by side, point after point in turn, with TensorFlow's ceiling at the largest batch
    timed again between their rounds.
    """

    model: str  # "efficientnetb0", "vgg16" (or "tiny")
    ceilings: tuple[EngineSystem, ...]
    batches: tuple[int, ...]
    rounds: int
    ceiling_duration_s: float  # per engine, batch size and round
    served: tuple[EngineSystem, ...]
    concurrencies: tuple[int, ...]
    duration_s: float  # per served point
    upload: str = "224"


@dataclass(frozen=True)
class Plan:
    """Everything one run measures, in order."""

    mode: str
    panels: tuple[Panel, ...]
    sweep: tuple[SweepRun, ...] = field(default=())
    engines: tuple[EnginePanel, ...] = field(default=())


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
            if model == "tiny" and precision != "float32" and not quick:
                # The tiny model measures the per-request overhead, which the precision
                # does not change (and TensorFlow emulates bfloat16 on CPUs without it).
                continue
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
        # The large upload costs the web tier the same whatever the model: the tiny model
        # shows it for every system, VGG16 for onemodel only.
        baseline = both if model == "tiny" else ("224",)
        systems = tuple(
            SystemRun(name, both if name == "onemodel" else baseline, CONCURRENCIES)
            for name in SYSTEMS
        )
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


ENGINE_MODELS = ("efficientnetb0", "vgg16")
ENGINE_PRECISIONS = ("float32", "bfloat16", "int8")
ENGINE_BATCHES = (1, 8)
ENGINE_ROUNDS = 3
# Seconds per engine, batch size and round of the interleaved ceilings.
ENGINE_CEILING_S = {"vgg16": 4.0}
ENGINE_CEILING_DEFAULT_S = 2.0


def build_engine_panels(
    *,
    quick: bool,
    models: tuple[str, ...],
    precisions: tuple[str, ...],
    small_duration_s: float,
    vgg16_duration_s: float,
    int8_vgg16: bool = False,
) -> tuple[EnginePanel, ...]:
    """Return the engine panels: TensorFlow float32 beside OpenVINO at each precision.

    Full: every precision in the ceilings; the small model served on every one at c=1 and
    8, VGG16 served in float32 on both engines at c=8 (its memory is the point). Quick:
    the small model in float32 only, one round, OpenVINO served at c=8 (the float32 target
    needs no TensorFlow deployment, whose start alone takes a minute on a loaded machine).
    """
    if quick:
        precisions = tuple(p for p in precisions if p == "float32")
        models = tuple(m for m in models if m != "vgg16")
    panels = []
    for model in models:
        vgg16 = model == "vgg16"
        # int8 calibrates with NNCF first: minutes for a small model on a loaded 2-core
        # machine, far more for VGG16, so VGG16's int8 runs only when asked for.
        chosen = (
            precisions if int8_vgg16 or not vgg16 else tuple(p for p in precisions if p != "int8")
        )
        openvino = tuple(EngineSystem("openvino", precision) for precision in chosen)
        ceilings = (TENSORFLOW_FLOAT32, *openvino)
        served = (TENSORFLOW_FLOAT32, *(s for s in openvino if s.precision == "float32"))
        panels.append(
            EnginePanel(
                model=model,
                ceilings=ceilings,
                batches=ENGINE_BATCHES,
                rounds=1 if quick else ENGINE_ROUNDS,
                ceiling_duration_s=ENGINE_CEILING_S.get(model, ENGINE_CEILING_DEFAULT_S),
                served=openvino if quick else served if vgg16 else ceilings,
                concurrencies=(8,) if vgg16 or quick else (1, 8),
                duration_s=vgg16_duration_s if vgg16 else small_duration_s,
            )
        )
    return tuple(panels)
