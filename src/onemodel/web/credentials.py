"""The API-key check itself, without Flask: the web tier and the gRPC server share it."""

from __future__ import annotations

import hmac

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
