"""Optional API keys: ``Authorization: Bearer <key>`` on the public API (API_KEYS_FILE)."""

from __future__ import annotations

from flask import request

from onemodel.errors import UnauthorizedError
from onemodel.web.credentials import key_matches
from onemodel.web.runtime import runtime

# Probes stay open: a liveness check must not need a secret. /metrics is open or not per
# METRICS_REQUIRE_KEY; the web page and its static files hold no data and stay open (its
# predictions go to /predict, which needs the key).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live"})
_OPEN_BLUEPRINTS = frozenset({"page"})

__all__ = ["OPEN_PATHS", "key_matches", "require_api_key"]


def require_api_key() -> None:
    """Refuse a request to a protected path without a valid key (a before_request hook)."""
    settings = runtime().settings
    if not settings.api_keys:
        return
    if request.path in OPEN_PATHS or request.blueprint in _OPEN_BLUEPRINTS:
        return
    if request.path == "/metrics" and not settings.metrics_require_key:
        return
    if not key_matches(request.headers.get("Authorization"), settings.api_keys):
        raise UnauthorizedError()
