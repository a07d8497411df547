"""The contract of the manager socket: what the model server offers and what crosses it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

# The methods the shared object exposes over the manager (and nothing else).
EXPOSED_METHODS = ("predict", "info", "metrics_text")

STATES = ("loading", "ready", "failed", "stopping")


@dataclass(frozen=True)
class Agreement:
    """How a converted model's scores compare with the Keras float32 model's, measured at load.

    Measured on a fixed set of seeded inputs; ``top1`` is the fraction with the same top-1
    class, ``max_abs_diff`` the largest absolute score difference.
    """

    images: int = 0
    top1: float = 0.0
    max_abs_diff: float = 0.0


@dataclass(frozen=True)
class ModelInfo:
    """The model server's state, its model and its own limits, as one process decided them.

    The web tier reads input size, labels and the batch limit from here, never from its own
    environment: the model server's settings are the ones that count.
    """

    state: str  # one of STATES
    reason: str = ""  # why it is not ready ("" when ready)
    name: str = ""
    version: str = ""  # the version serving predictions now ("1" for a single model file)
    versions: tuple[str, ...] = ()  # the well-formed versions in the model repository
    last_error: str = ""  # why the latest version that failed to load or warm up failed
    input_size: tuple[int, int] = (0, 0)  # (height, width)
    labels: tuple[str, ...] = ()
    max_batch_size: int = 0  # the most images one predict call may carry
    preprocess: str = ""
    precision: str = ""
    engine: str = ""  # "tensorflow" or "openvino"
    engine_reason: str = ""  # why this engine (MODEL_ENGINE=auto) or what it computes in
    # A converted model against the Keras float32 model on seeded inputs (None: Keras itself).
    agreement: Agreement | None = None
    model_cache: str = ""  # "hit", "miss" (converted now), "" (no cache used)
    cpu_bfloat16: tuple[str, ...] = ()
    max_batch_delay_ms: float = 0.0
    max_queue: int = 0
    pid: int = 0
    uptime_s: float = 0.0
    load_count: int = 0
    instance: str = ""  # random id of the one shared object: equal for every client
    images_served: int = 0
    queued_images: int = 0
    # Diagnostic extras (builtins only) shown in /readyz, e.g. by test servers.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Return whether the model answers predictions."""
        return self.state == "ready"

    @property
    def num_classes(self) -> int:
        """Return the number of model outputs (one label each)."""
        return len(self.labels)

    def public(self) -> dict[str, Any]:
        """Return the JSON-ready readiness view (without the label list)."""
        body = asdict(self)
        extra = body.pop("extra")
        del body["labels"]
        body["model"] = body.pop("name")
        body["input_size"] = list(self.input_size)
        body["cpu_bfloat16"] = list(self.cpu_bfloat16)
        body["versions"] = list(self.versions)
        return {"ready": self.ready, **body, "num_classes": self.num_classes, **extra}


class ModelBackend(Protocol):
    """What the model server offers: the shared service and its clients both satisfy it."""

    def predict(
        self, images: np.ndarray, timeout_s: float, version: str | None = None
    ) -> np.ndarray:
        """Return float32 scores (N, classes) for uint8 RGB images (N, H, W, 3).

        With ``version`` (the ``ModelInfo.version`` the images were prepared for), the scores
        come from exactly that version, or ModelChangedError says another one serves now.
        """
        ...

    def info(self) -> ModelInfo:
        """Return the server's state, model and limits."""
        ...

    def metrics_text(self) -> bytes:
        """Return the server's Prometheus exposition text."""
        ...
