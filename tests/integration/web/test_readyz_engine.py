"""/readyz shows the engine, the precision and the measured agreement of the model server."""

from __future__ import annotations

import dataclasses
import json

from onemodel.boundary.contract import Agreement, ModelInfo
from onemodel.settings import Settings
from onemodel.web.app import create_app
from tests.support.fakes import FakePredictor


class _OpenVINOPredictor(FakePredictor):
    def spec(self) -> ModelInfo:
        return dataclasses.replace(
            super().spec(),
            precision="bfloat16",
            engine="openvino",
            engine_reason="this CPU has no bfloat16 units: OpenVINO computes in float32",
            agreement=Agreement(images=4, top1=1.0, max_abs_diff=3e-8),
            model_cache="hit",
        )


def test_readyz_reports_engine_precision_agreement_and_cache() -> None:
    client = create_app(Settings(), predictor=_OpenVINOPredictor()).test_client()
    body = client.get("/readyz").get_json()
    assert body["engine"] == "openvino"
    assert body["precision"] == "bfloat16"
    assert body["engine_reason"].startswith("this CPU has no bfloat16 units")
    assert body["agreement"] == {"images": 4, "top1": 1.0, "max_abs_diff": 3e-8}
    assert body["model_cache"] == "hit"


def test_readyz_of_a_keras_model_has_no_agreement() -> None:
    info = dataclasses.replace(FakePredictor().spec(), engine="tensorflow")
    public = info.public()
    assert public["engine"] == "tensorflow"
    assert public["agreement"] is None
    json.dumps(public)  # JSON-ready as it is
