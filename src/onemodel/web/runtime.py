"""What the routes of one app share: settings, the model-server handle, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from onemodel.settings import Settings
from onemodel.web.metrics import WebMetrics
from onemodel.web.predictions import Predictor

EXTENSION = "onemodel"


@dataclass(frozen=True)
class Runtime:
    """What the routes need: the settings, the model server handle and the metrics."""

    settings: Settings
    predictor: Predictor
    metrics: WebMetrics


def runtime() -> Runtime:
    """Return the runtime of the current app."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
