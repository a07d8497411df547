"""The layout's promises: which process imports what, and no import circles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

PACKAGE = ROOT / "src" / "onemodel"
ML_FRAMEWORKS = ("tensorflow", "keras", "openvino", "nncf", "torch", "jax")

# What each process role may import from onemodel (besides itself); the __init__
# docstrings say the same in words.
SHARED = {
    "onemodel",
    "onemodel.settings",
    "onemodel.errors",
    "onemodel.logconfig",
    "onemodel.memory",
}
ALLOWED = {
    "onemodel.boundary": SHARED,
    "onemodel.web": SHARED | {"onemodel.boundary"},
    # int8 calibration images are decoded and resized exactly as uploads are (pure, OpenCV).
    "onemodel.model_server": SHARED | {"onemodel.boundary", "onemodel.web.imaging"},
    # The master forgets dead workers' metric files through the web tier's metrics module.
    "onemodel.master": SHARED | {"onemodel.boundary", "onemodel.web.metrics"},
    # The gRPC process reuses the web tier's pure protocol modules (no Flask in them).
    "onemodel.grpc_server": SHARED
    | {
        "onemodel.boundary",
        "onemodel.web.served_model",
        "onemodel.web.tensors",
        "onemodel.web.image_decoder",
        "onemodel.web.credentials",
    },
}
FORBIDDEN_THIRD_PARTY = {
    "onemodel.boundary": ("flask", "werkzeug", "cv2", "prometheus_client", *ML_FRAMEWORKS),
    "onemodel.web": ML_FRAMEWORKS,
    "onemodel.master": ("flask", *ML_FRAMEWORKS),
    "onemodel.grpc_server": ("flask", "werkzeug", *ML_FRAMEWORKS),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Return every module a file imports, at top level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {imported for imported in _imports(path) if imported in modules and imported != name}
        for name, path in modules.items()
    }


def _allowed(imported: str, role: str) -> bool:
    return any(
        imported == allowed or (allowed != "onemodel" and imported.startswith(allowed + "."))
        for allowed in ALLOWED[role]
    )


def _role(module: str) -> str | None:
    return next((role for role in ALLOWED if module == role or module.startswith(role + ".")), None)


def test_building_the_web_app_imports_no_ml_framework_and_no_model_server_module() -> None:
    script = (
        "import json, sys\n"
        "from onemodel.settings import Settings\n"
        "from onemodel.web.app import create_app\n"
        "from tests.support.fakes import FakePredictor\n"
        "app = create_app(Settings(), predictor=FakePredictor())\n"
        "app.test_client().get('/healthz')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    assert "onemodel.web.app" in loaded  # the check saw the app being built
    offending = [
        name
        for name in loaded
        if name.split(".")[0] in ML_FRAMEWORKS or name.startswith(("onemodel.model_server",))
    ]
    assert offending == []


def test_building_the_grpc_server_imports_no_flask_no_ml_framework_no_model_server() -> None:
    script = (
        "import json, sys\n"
        "from onemodel.settings import Settings\n"
        "from onemodel.grpc_server.server import create_server\n"
        "from tests.support.fakes import FakePredictor\n"
        "from onemodel.web.image_decoder import create_decoder\n"
        "settings = Settings(grpc_port=0)\n"
        "decoder = create_decoder(settings)\n"
        "server, port = create_server(settings, FakePredictor(), decoder)\n"
        "server.stop(None)\n"
        "decoder.close()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    assert "onemodel.grpc_server.service" in loaded  # the check saw the server being built
    offending = [
        name
        for name in loaded
        if name.split(".")[0] in (*ML_FRAMEWORKS, "flask", "werkzeug")
        or name.startswith("onemodel.model_server")
    ]
    assert offending == []


def test_the_onemodel_package_has_no_import_circle() -> None:
    graph = _graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            pytest.fail("import circle: " + " -> ".join(cycle))
        visiting.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        visiting.pop()
        done.add(name)

    for module in sorted(graph):
        visit(module)


@pytest.mark.parametrize("role", sorted(ALLOWED))
def test_each_process_role_imports_only_what_its_docstring_allows(role: str) -> None:
    graph = _graph()
    members = [name for name in graph if _role(name) == role]
    assert members, f"no modules found for {role}"
    violations = []
    for name in members:
        for imported in graph[name]:
            if _role(imported) != role and not _allowed(imported, role):
                violations.append(f"{name} imports {imported}")
    assert violations == []


@pytest.mark.parametrize("role", sorted(FORBIDDEN_THIRD_PARTY))
def test_process_roles_do_not_import_foreign_frameworks(role: str) -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if _role(name) != role:
            continue
        for imported in _imports(path):
            if imported.split(".")[0] in FORBIDDEN_THIRD_PARTY[role]:
                violations.append(f"{name} imports {imported}")
    assert violations == []


def test_every_subpackage_says_where_it_runs() -> None:
    for role in ALLOWED:
        init = PACKAGE / role.split(".")[1] / "__init__.py"
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "Runs in" in docstring, f"{init} does not say which process it runs in"
        assert "import" in docstring, f"{init} does not say what it may import"
