"""The Flask application factory and its JSON error handling."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from onemodel.errors import ConfigError, OneModelError
from onemodel.manager import ModelClient
from onemodel.metrics import WebMetrics
from onemodel.predictions import Predictor
from onemodel.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """What the routes need: the settings and the model server handle."""

    settings: Settings
    predictor: Predictor
    metrics: WebMetrics


def create_app(settings: Settings | None = None, predictor: Predictor | None = None) -> Flask:
    """Build the web app. Nothing connects here: a ModelClient connects on first use."""
    settings = settings or Settings.from_env()
    metrics = WebMetrics()
    if predictor is None:
        predictor = _default_predictor(settings, on_reconnect=metrics.reconnects.inc)
    app = Flask(__name__)
    app.config.update(
        # Werkzeug answers 413 from Content-Length before reading the body.
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_PARTS=settings.max_form_parts,
        JSON_SORT_KEYS=False,
    )
    app.extensions["onemodel"] = Runtime(settings=settings, predictor=predictor, metrics=metrics)
    from onemodel.routes import blueprint  # noqa: PLC0415  (routes need the runtime type)

    app.register_blueprint(blueprint)
    from onemodel.page import blueprint as page_blueprint  # noqa: PLC0415

    app.register_blueprint(page_blueprint)
    from onemodel.inference_protocol import blueprint as protocol_blueprint  # noqa: PLC0415

    app.register_blueprint(protocol_blueprint)
    app.before_request(_assign_request_id)
    app.after_request(_return_request_id)
    app.register_error_handler(OneModelError, _answer_error)
    app.register_error_handler(HTTPException, _answer_http_exception)
    app.register_error_handler(Exception, _answer_unexpected)
    return app


def runtime() -> Runtime:
    """Return the runtime of the current app."""
    return current_app.extensions["onemodel"]  # type: ignore[no-any-return]


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """Return the one JSON error shape."""
    return {"error": {"code": code, "message": message}}


REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _assign_request_id() -> None:
    g.started = time.perf_counter()
    # Keep a caller's id (e.g. from a load balancer) if it is sane, else make one.
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def _return_request_id(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or uuid.uuid4().hex
    # The route template, not the path: unknown paths must not grow the label set.
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    runtime().metrics.observe_request(route, request.method, response.status_code, elapsed)
    return response


def _default_predictor(settings: Settings, on_reconnect: Callable[[], None]) -> ModelClient:
    address = settings.model_server_address
    if address is None:
        raise ConfigError(
            "MODEL_SERVER_ADDRESS is not set: run under gunicorn -c gunicorn.conf.py (which "
            "starts a private model server) or point it at a running model_server.py"
        )
    return ModelClient(address, settings.require_authkey(), on_reconnect=on_reconnect)


def _answer_error(error: OneModelError) -> ResponseReturnValue:
    runtime().metrics.errors.labels(error.code).inc()
    if error.status >= 500:
        logger.warning("%s: %s", error.code, error.message)
    return jsonify(error_body(error.code, error.message)), error.status, error.headers()


def _answer_http_exception(error: HTTPException) -> ResponseReturnValue:
    status = error.code or 500
    code = {413: "payload_too_large"}.get(status, (error.name or "error").lower().replace(" ", "_"))
    message = error.description or error.name or "error"
    runtime().metrics.errors.labels(code).inc()
    headers = [(name, value) for name, value in error.get_headers() if name == "Allow"]
    return jsonify(error_body(code, message)), status, headers


def _answer_unexpected(error: Exception) -> ResponseReturnValue:
    logger.exception("unexpected error while handling a request")
    runtime().metrics.errors.labels("internal_error").inc()
    return jsonify(error_body("internal_error", "internal server error")), 500
