"""What the routes of one app share: settings, the model-server handle, metrics, decoder."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from onemodel.settings import Settings
from onemodel.web.image_decoder import ImageDecoder
from onemodel.web.metrics import WebMetrics
from onemodel.web.predictions import Predictor

EXTENSION = "onemodel"


@dataclass(frozen=True)
class Runtime:
    """What the routes need: the settings, the model server handle, the metrics and the
    image decoder (the decode sandbox)."""

    settings: Settings
    predictor: Predictor
    metrics: WebMetrics
    decoder: ImageDecoder


def runtime() -> Runtime:
    """Return the runtime of the current app."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
