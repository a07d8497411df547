"""WebMetrics labels take bounded values; dead workers' files fold into one archive."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from onemodel.web.metrics import WebMetrics, bounded_method, bounded_status


def test_unknown_methods_are_one_label_value() -> None:
    metrics = WebMetrics()
    for index in range(2000):
        metrics.observe_request("unmatched", f"M{index}", 405, 0.001)
    metrics.observe_request("/predict", "POST", 200, 0.01)
    text = generate_latest(metrics.registry).decode()
    lines = [line for line in text.splitlines() if line.startswith("onemodel_http_requests_total")]
    assert len(lines) == 2
    assert 'method="other"' in text and 'method="POST"' in text


@pytest.mark.parametrize(
    ("method", "label"), [("GET", "GET"), ("get", "other"), ("PROPFIND", "other"), ("", "other")]
)
def test_bounded_method(method: str, label: str) -> None:
    assert bounded_method(method) == label


@pytest.mark.parametrize(
    ("status", "label"), [(200, "200"), (599, "599"), (99, "other"), (1000, "other")]
)
def test_bounded_status(status: int, label: str) -> None:
    assert bounded_status(status) == label
