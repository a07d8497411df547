"""The Flask application factory: settings, the model-server client, blueprints, errors."""

from __future__ import annotations

import time
import uuid
import weakref

from flask import Flask, Response, g, request

from onemodel.boundary.pool import ModelPool, pool_from_settings
from onemodel.settings import Settings
from onemodel.web import inference_protocol, page, routes
from onemodel.web.api_keys import require_api_key
from onemodel.web.error_handlers import onemodel_shape, register_error_handlers
from onemodel.web.image_decoder import ImageDecoder, create_decoder
from onemodel.web.metrics import WebMetrics
from onemodel.web.predictions import Predictor
from onemodel.web.request_ids import REQUEST_ID_HEADER, sane_request_id
from onemodel.web.runtime import EXTENSION, Runtime, runtime


def create_app(
    settings: Settings | None = None,
    predictor: Predictor | None = None,
    decoder: ImageDecoder | None = None,
) -> Flask:
    """Build the web app. Nothing connects here: the model pool connects on first use, and
    the decode sandbox starts its processes on first use."""
    settings = settings or Settings.from_env()
    metrics = WebMetrics()
    if predictor is None:
        predictor = _default_predictor(settings, metrics)
    if decoder is None:
        decoder = create_decoder(settings)
    app = Flask(__name__)
    # Stop the decoder's processes when the app goes away, or at the latest at exit.
    weakref.finalize(app, decoder.close)
    app.config.update(
        # Werkzeug answers 413 from Content-Length before reading the body.
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_PARTS=settings.max_form_parts,
        JSON_SORT_KEYS=False,
    )
    app.extensions[EXTENSION] = Runtime(
        settings=settings, predictor=predictor, metrics=metrics, decoder=decoder
    )
    app.register_blueprint(routes.blueprint)
    app.register_blueprint(page.blueprint)
    app.register_blueprint(inference_protocol.blueprint)
    app.before_request(_assign_request_id)
    app.before_request(require_api_key)  # after the id: a 401 carries one too
    app.after_request(_return_request_id)
    register_error_handlers(app, onemodel_shape)
    return app


def _assign_request_id() -> None:
    g.started = time.perf_counter()
    g.request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER))


def _return_request_id(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or uuid.uuid4().hex
    # The route template, not the path: unknown paths must not grow the label set.
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    runtime().metrics.observe_request(route, request.method, response.status_code, elapsed)
    return response


def _default_predictor(settings: Settings, metrics: WebMetrics) -> ModelPool:
    return pool_from_settings(
        settings, on_attempt=metrics.count_replica_attempt, on_reconnect=metrics.reconnects.inc
    )
