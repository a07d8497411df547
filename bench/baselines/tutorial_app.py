"""The tutorial's design: one threaded Flask process; a manager process holds the model; a lock."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from multiprocessing.managers import BaseManager
from types import FrameType
from typing import Any

import numpy as np
from common import add_error_handler, image_from_request, model_settings, quiet_request_logs, ranked
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from keras_model import load_model


class TutorialModel:
    """The shared object registered with the manager: it lives in the manager's process."""

    def __init__(self, model_path: str, precision: str) -> None:
        self._model = load_model(model_path, precision)
        self._model.warm_up()

    def input_size(self) -> tuple[int, int]:
        """Return the model's (height, width)."""
        return self._model.input_size

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return scores (N, classes) for RGB uint8 images."""
        return self._model.predict(images)


class ModelManager(BaseManager):
    """The tutorial's manager: started from the web process, it serves TutorialModel."""


ModelManager.register("Model", TutorialModel)


def create_app(model: Any, size: tuple[int, int]) -> Flask:
    """Build the Flask app; every model call (one image) holds the one lock."""
    app = Flask(__name__)
    lock = threading.Lock()

    @app.post("/predict")
    def predict() -> ResponseReturnValue:
        image = image_from_request(request, size)
        with lock:
            scores = model.predict(image)
        return jsonify(predictions=ranked(scores[0]))

    @app.get("/readyz")
    def readyz() -> ResponseReturnValue:
        return jsonify(ready=True, pid=os.getpid())

    add_error_handler(app)
    return app


def _exit_on_sigterm() -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)  # unwinds app.run(); the manager's finalizer then stops its process

    signal.signal(signal.SIGTERM, handle)


def main() -> int:
    """Start the manager and its model, then serve with Flask's threaded development server."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    _exit_on_sigterm()
    quiet_request_logs()
    manager = ModelManager()
    manager.start()
    model = manager.Model(*model_settings())  # type: ignore[attr-defined]
    app = create_app(model, tuple(model.input_size()))
    app.run(host="127.0.0.1", port=args.port, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
