"""Class names: the bundled ImageNet list, generated names and labels files."""

from __future__ import annotations

from pathlib import Path

import pytest

from onemodel.errors import ConfigError
from onemodel.model_server.labels import imagenet_labels, load_labels


def test_imagenet_labels_are_bundled() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench"
    assert labels[967] == "espresso"
    assert load_labels(None, 1000) == labels


def test_generated_and_file_labels(tmp_path: Path) -> None:
    assert load_labels(None, 3) == ["class_0", "class_1", "class_2"]
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n\n")
    assert load_labels(str(path), 2) == ["cat", "dog"]
    with pytest.raises(ConfigError, match="2 names but the model has 3"):
        load_labels(str(path), 3)
