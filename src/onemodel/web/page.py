"""The try-the-model web page: GET / and its static files, under a strict CSP."""

from __future__ import annotations

from flask import Blueprint, Response, request

blueprint = Blueprint("page", __name__, static_folder="static", static_url_path="/static")

CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' blob: data:"

# The app's own static route serves the same folder (Flask adds it because the package has
# a static/ folder), so the headers go on both endpoints, and on nothing else.
_PAGE_ENDPOINTS = frozenset({"page.index", "page.static", "static"})


@blueprint.get("/")
def index() -> Response:
    """Serve the single page."""
    response = blueprint.send_static_file("index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.after_app_request
def _page_headers(response: Response) -> Response:
    """Add the security headers to the page and its static files."""
    if request.endpoint in _PAGE_ENDPOINTS:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
