"""key_matches: Bearer keys compared in constant time against every configured key."""

from __future__ import annotations

import pytest

from onemodel.web.api_keys import key_matches

KEYS = (b"first-key-0123456789", b"second-key-0123456789")


@pytest.mark.parametrize("header", ["Bearer first-key-0123456789", "bearer second-key-0123456789"])
def test_a_configured_key_matches(header: str) -> None:
    assert key_matches(header, KEYS)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer first-key-012345678",  # one character short
        "Bearer first-key-0123456789x",
        "Basic first-key-0123456789",
        "first-key-0123456789",
        "Bearer \u00e9first-key",
    ],
)
def test_anything_else_does_not(header: str | None) -> None:
    assert not key_matches(header, KEYS)


def test_no_keys_match_nothing() -> None:
    assert not key_matches("Bearer anything", ())
