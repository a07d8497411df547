"""Optional API keys: ``Authorization: Bearer <key>`` on the public API (API_KEYS_FILE)."""

from __future__ import annotations

import hmac

from flask import request

from onemodel.errors import UnauthorizedError
from onemodel.web.runtime import runtime

# Probes stay open: a liveness check must not need a secret. /metrics is open or not per
# METRICS_REQUIRE_KEY; the web page and its static files hold no data and stay open (its
# predictions go to /predict, which needs the key).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live"})
_OPEN_BLUEPRINTS = frozenset({"page"})
_SCHEME = "bearer"


def key_matches(authorization: str | None, keys: tuple[bytes, ...]) -> bool:
    """Return whether an Authorization header carries one of keys, in constant time.

    Every key is compared (no early exit), each with hmac.compare_digest, so the time taken
    says nothing about which key, or how much of one, matched.
    """
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    presented = credentials.strip().encode("latin-1", errors="replace")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched and scheme.lower() == _SCHEME and bool(presented)


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
