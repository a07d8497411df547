"""Class names: a labels file, the bundled ImageNet names, or generated ``class_<i>``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from onemodel.errors import ConfigError

IMAGENET_CLASSES = 1000


def load_labels(path: str | None, num_classes: int) -> list[str]:
    """Return one name per class, checking that a labels file has exactly num_classes lines."""
    if path is not None:
        labels = _read_lines(Path(path).read_text(encoding="utf-8"))
        if len(labels) != num_classes:
            raise ConfigError(
                f"MODEL_LABELS={path!r} has {len(labels)} names but the model has "
                f"{num_classes} outputs"
            )
        return labels
    if num_classes == IMAGENET_CLASSES:
        return imagenet_labels()
    return [f"class_{index}" for index in range(num_classes)]


def imagenet_labels() -> list[str]:
    """Return the 1000 ImageNet class names shipped in the package (no network needed)."""
    text = (
        resources.files("onemodel.model_server").joinpath("imagenet_classes.txt").read_text("utf-8")
    )
    return _read_lines(text)


def _read_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
