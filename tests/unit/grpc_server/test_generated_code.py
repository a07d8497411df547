"""The shipped protobuf code matches the shipped .proto, and lives beside other clients' code."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

SCRIPT = ROOT / "scripts" / "generate_grpc_stubs.py"


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (test extra) missing"
)
def test_shipped_stubs_are_what_the_generator_writes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--destination", str(tmp_path)], check=True, timeout=120
    )
    for name in ("open_inference_grpc_pb2.py", "open_inference_grpc_pb2.pyi"):
        shipped = ROOT / "src" / "onemodel" / "grpc_server" / name
        generated = tmp_path / "onemodel" / "grpc_server" / name
        assert generated.read_text() == shipped.read_text(), f"{name} is stale: make grpc-stubs"


def test_our_messages_and_tritonclients_share_a_process() -> None:
    # Both define inference.ModelInferRequest; in one descriptor pool the second import
    # would fail. Ours use a private pool; the bytes on the wire are the same.
    script = (
        "import tritonclient.grpc.service_pb2 as triton\n"
        "from onemodel.grpc_server import open_inference_grpc_pb2 as ours\n"
        "request = ours.ModelInferRequest(model_name='m', raw_input_contents=[b'x'])\n"
        "request.inputs.add(name='image', datatype='UINT8', shape=[1])\n"
        "theirs = triton.ModelInferRequest.FromString(request.SerializeToString())\n"
        "assert theirs.inputs[0].name == 'image' and theirs.raw_input_contents == [b'x']\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "ok", done.stderr
