"""The naive design: every Gunicorn sync worker loads its own model copy after fork."""

from __future__ import annotations

import os
from pathlib import Path

from common import add_error_handler, image_from_request, model_settings, ranked
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from keras_model import LoadedModel, load_model


def _load() -> LoadedModel:
    """Load and warm this worker's model, then tell the benchmark (NAIVE_READY_DIR) it is up."""
    model = load_model(*model_settings())
    model.warm_up()
    ready_dir = os.environ.get("NAIVE_READY_DIR")
    if ready_dir:
        Path(ready_dir, str(os.getpid())).touch()
    return model


def create_app(model: LoadedModel) -> Flask:
    """Build the Flask app: one image per request, one model call per image."""
    app = Flask(__name__)

    @app.post("/predict")
    def predict() -> ResponseReturnValue:
        scores = model.predict(image_from_request(request, model.input_size))
        return jsonify(predictions=ranked(scores[0]))

    @app.get("/readyz")
    def readyz() -> ResponseReturnValue:
        return jsonify(ready=True, pid=os.getpid())

    add_error_handler(app)
    return app


# Module level on purpose: Gunicorn imports this in each worker after fork (no preload).
app = create_app(_load())
