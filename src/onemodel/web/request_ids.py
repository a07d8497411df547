"""Request ids: keep a caller's sane X-Request-ID, else make one."""

from __future__ import annotations

import re
import uuid

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def sane_request_id(incoming: str | None) -> str:
    """Return incoming if it is a sane id (e.g. from a load balancer), else a new one."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex
