"""Walk the Open Inference Protocol's REST spec endpoint by endpoint against a server.

The endpoints and schemas come from the protocol's own OpenAPI file
(tests/support/open_inference_rest.yaml); the health bodies, which that file leaves out,
from its prose (inference_rest.md): live ``{"live": bool}``, ready ``{"ready": bool}``
(the prose's ``"live"`` there is a typo: its gRPC twin and KServe say ``ready``), model ready
``{"name": str, "ready": bool}``. Works with any client through a ``Send`` callable, so the
same walk runs on the Flask test client and on real Gunicorn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SPEC = Path(__file__).with_name("open_inference_rest.yaml")


@dataclass(frozen=True)
class Answer:
    """What came back: status, media type (without parameters) and body bytes."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Send = Callable[[str, str, bytes | None], Answer]  # (method, path, JSON body) -> Answer

HEALTH_BODIES = {
    "/v2/health/live": {"live": True},
    "/v2/health/ready": {"ready": True},
}


@cache
def spec() -> dict[str, Any]:
    """Return the parsed OpenAPI document."""
    return dict(yaml.safe_load(SPEC.read_text()))


def validate(body: Any, schema_name: str) -> None:
    """Validate body against a component schema of the spec (its $refs resolved)."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec()["components"]}
    jsonschema.validate(body, schema)


def check_answer(answer: Answer, status: int, what: str) -> Any:
    """Assert the status and the JSON media type; return the parsed body."""
    assert answer.status == status, f"{what}: {answer.status} {answer.body[:300]!r}"
    assert answer.content_type == "application/json", f"{what}: {answer.content_type}"
    return answer.json()


def walk(send: Send, model: str, version: str, infer_body: dict[str, Any]) -> list[str]:
    """Call every endpoint of the spec (with and without the optional version); return them."""
    visited = []
    for template, operations in spec()["paths"].items():
        for path in _variants(template, model, version):
            for method, operation in operations.items():
                if method not in ("get", "post"):
                    continue
                body = json.dumps(infer_body).encode() if method == "post" else None
                answer = send(method.upper(), path, body)
                what = f"{method.upper()} {path}"
                parsed = check_answer(answer, 200, what)
                _check_success(template, path, parsed, operation, model)
                visited.append(what)
    return visited


def walk_errors(send: Send, model: str, infer_body: dict[str, Any]) -> None:
    """Check the error shape, ``{"error": str}``, and statuses of failing requests."""
    bad_input = {**infer_body, "inputs": [{**infer_body["inputs"][0], "datatype": "FP99"}]}
    cases = [
        ("GET", f"/v2/models/no-such-{model}", None, 404, "metadata_model_error_response"),
        ("GET", f"/v2/models/{model}/versions/999", None, 404, "metadata_model_error_response"),
        ("GET", f"/v2/models/no-such-{model}/ready", None, 404, "metadata_model_error_response"),
        ("POST", f"/v2/models/{model}/infer", b"{not json", 400, "inference_error_response"),
        ("POST", f"/v2/models/{model}/infer", json.dumps(bad_input).encode(), 400, None),
        ("POST", f"/v2/models/no-such-{model}/infer", json.dumps(infer_body).encode(), 404, None),
        ("GET", "/v2/no/such/endpoint", None, 404, "metadata_server_error_response"),
        ("POST", "/v2/health/live", b"{}", 405, None),
    ]
    for method, path, body, status, schema_name in cases:
        parsed = check_answer(send(method, path, body), status, f"{method} {path}")
        validate(parsed, schema_name or "inference_error_response")
        assert set(parsed) == {"error"} and parsed["error"], parsed


def walk_not_ready(send: Send, model: str) -> None:
    """While the model is not ready: live 200; ready and model ready 503 with ready false."""
    assert check_answer(send("GET", "/v2/health/live", None), 200, "live") == {"live": True}
    ready = check_answer(send("GET", "/v2/health/ready", None), 503, "ready (not ready)")
    assert ready["ready"] is False and isinstance(ready["error"], str), ready
    for path in (f"/v2/models/{model}/ready", f"/v2/models/{model}/versions/1/ready"):
        body = check_answer(send("GET", path, None), 503, f"{path} (not ready)")
        assert body["ready"] is False and body["name"] == model, body


def _variants(template: str, model: str, version: str) -> list[str]:
    path = template.replace("${MODEL_NAME}", model).replace("${MODEL_VERSION}", version)
    paths = [path]
    if "/versions/" in path:  # the spec's paths name a version; it is optional
        paths.append(path.replace(f"/versions/{version}", ""))
    if path == "/v2/":
        paths.append("/v2")
    return paths


def _check_success(
    template: str, path: str, body: Any, operation: dict[str, Any], model: str
) -> None:
    if template in HEALTH_BODIES:
        assert body == HEALTH_BODIES[template], f"{path}: {body}"
        return
    if template.endswith("/ready"):
        assert body == {"name": model, "ready": True}, f"{path}: {body}"
        return
    content = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema_name = content.rsplit("/", 1)[-1]
    validate(body, schema_name)
    if schema_name == "metadata_model_response":
        assert body["name"] == model
        for tensor in (*body["inputs"], *body["outputs"]):
            validate(tensor, "metadata_tensor")
    if schema_name == "inference_response":
        assert body["model_name"] == model
        for output in body["outputs"]:
            validate(output, "response_output")
