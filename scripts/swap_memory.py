"""Measure the model server's memory around a version swap, with VGG16 (random weights).

Run: PYTHONPATH=src python scripts/swap_memory.py [--swaps 2]

Loads version 1, serves a few predictions, loads version 2 beside it (the peak), swaps,
retires version 1 and prints the resident size (RSS) at each step as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import weakref

import numpy as np
import psutil

from onemodel.memory import limit_malloc_arenas
from onemodel.model_server.repository import ModelRepository, ModelVersion
from onemodel.model_server.service import ModelService
from onemodel.model_server.versions import VersionWatcher, load_version
from onemodel.settings import Settings


def _rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def main() -> None:
    """Swap VGG16 versions in one process and print RSS figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--swaps", type=int, default=2)
    args = parser.parse_args()
    limit_malloc_arenas()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The TensorFlow engine, as measured in docs/versions.md (before OpenVINO landed).
    settings = Settings(model_path="vgg16", weights="random", engine="tensorflow")
    service = ModelService()
    figures: dict[str, object] = {}
    images = np.zeros((4, 224, 224, 3), np.uint8)

    def load(version: ModelVersion) -> tuple[object, object]:
        batcher, info = load_version(settings, version, None)
        figures[f"v{version.number}_loaded_mb"] = _rss_mb()  # old and new resident: the peak
        return batcher, info

    version = ModelVersion(1, "vgg16")
    repository = ModelRepository(name="vgg16", single=version)
    watcher = VersionWatcher(service, repository, load)  # type: ignore[arg-type]
    import keras  # noqa: F401, PLC0415  (TensorFlow's own memory, before any model)

    figures["tensorflow_imported_mb"] = _rss_mb()
    assert watcher.load_initial()
    service.predict(images, 60)
    figures["v1_serving_mb"] = _rss_mb()
    for number in range(2, args.swaps + 2):
        # The repository is a single model here, so each swap is driven by hand.
        started = time.monotonic()
        assert watcher.batcher is not None
        old_model = weakref.ref(watcher.batcher._predict_batch.__self__.keras_model)  # type: ignore[attr-defined]
        watcher.swap_to(ModelVersion(number, "vgg16"))
        figures[f"v{number - 1}_model_collected"] = old_model() is None
        figures[f"v{number}_swap_s"] = round(time.monotonic() - started, 2)
        service.predict(images, 60)
        figures[f"v{number}_serving_after_release_mb"] = _rss_mb()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
