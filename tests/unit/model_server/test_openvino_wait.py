"""A split batch waits for every stream's request, even when one of them fails."""

from __future__ import annotations

import pytest

pytest.importorskip("openvino")

from onemodel.model_server.engines.openvino import _wait_all


class _Request:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.waited = False

    def wait(self) -> None:
        self.waited = True
        if self.error is not None:
            raise self.error


def test_every_request_is_waited_for_and_the_first_failure_raised() -> None:
    requests = [_Request(RuntimeError("first")), _Request(), _Request(RuntimeError("third"))]
    with pytest.raises(RuntimeError, match="first"):
        _wait_all(requests)
    assert all(request.waited for request in requests)


def test_no_failure_returns_after_waiting_for_all() -> None:
    requests = [_Request(), _Request()]
    _wait_all(requests)
    assert all(request.waited for request in requests)
