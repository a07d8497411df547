"""What the baseline web apps share: reading the upload, decoding it, ranking the scores."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from flask import Flask, Request, jsonify
from flask.typing import ResponseReturnValue

from onemodel.errors import OneModelError
from onemodel.web.imaging import prepare_image
from onemodel.web.ranking import top_classes

MAX_IMAGE_PIXELS = 50_000_000
TOP_K = 5


def model_settings() -> tuple[str, str]:
    """Return (MODEL_PATH, MODEL_PRECISION) from the environment, as onemodel reads them."""
    model_path = os.environ.get("MODEL_PATH", "vgg16").strip() or "vgg16"
    precision = os.environ.get("MODEL_PRECISION", "float32").strip().lower() or "float32"
    return model_path, precision


def image_from_request(request: Request, size: tuple[int, int]) -> np.ndarray:
    """Decode the multipart field ``file`` to one RGB uint8 model input (1, H, W, 3).

    The same OpenCV decode and resize as onemodel, so only the serving design differs.
    """
    upload = request.files.get("file")
    if upload is None:
        raise OneModelError("no file field")
    return prepare_image(upload.read(), size, MAX_IMAGE_PIXELS)[np.newaxis]


def ranked(scores: np.ndarray, top_k: int = TOP_K) -> list[dict[str, Any]]:
    """Return the top_k classes as ``{"index", "score"}``, highest score first."""
    flat = np.asarray(scores, dtype=np.float32).reshape(-1)
    return [
        {"index": index, "score": round(float(flat[index]), 6)}
        for index in top_classes(flat, top_k)[0]
    ]


def quiet_request_logs() -> None:
    """Drop per-request access logs (onemodel runs the benchmark with them off too)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def add_error_handler(app: Flask) -> None:
    """Answer a bad upload with 400 JSON instead of a 500 page."""

    def answer(error: OneModelError) -> ResponseReturnValue:
        return jsonify(error=str(error)), 400

    app.register_error_handler(OneModelError, answer)
