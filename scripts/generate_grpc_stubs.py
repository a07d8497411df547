"""Regenerate the shipped protobuf code of the Open Inference Protocol's gRPC service.

Run ``make grpc-stubs`` (needs grpcio-tools, in the ``test`` extra) after changing
``src/onemodel/grpc_server/open_inference_grpc.proto``; a unit test fails while the shipped
files differ from what this script writes.

The generated module registers its messages in a private descriptor pool, not protobuf's
default one: the protocol's package is ``inference``, as in tritonclient's and KServe's own
generated code, and two files defining ``inference.ModelInferRequest`` in one pool make the
second import fail. A private pool lets this server and those clients share a process (the
test suite does). The wire format does not depend on the pool.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOT = ROOT / "src"
PROTO = Path("onemodel/grpc_server/open_inference_grpc.proto")
OUTPUTS = (
    Path("onemodel/grpc_server/open_inference_grpc_pb2.py"),
    Path("onemodel/grpc_server/open_inference_grpc_pb2.pyi"),
)
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "# onemodel: a private pool, so tritonclient's or KServe's `inference` package can be\n"
    "# imported in the same process (see scripts/generate_grpc_stubs.py).\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def generate(destination: Path) -> list[Path]:
    """Write the generated files under destination (a source root); return their paths."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{SOURCE_ROOT}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                str(SOURCE_ROOT / PROTO),
            ],
            check=True,
        )
        written = []
        for relative in OUTPUTS:
            text = (Path(scratch) / relative).read_text()
            if relative.suffix == ".py":
                if text.count(_DEFAULT_POOL) != 1:
                    raise SystemExit(f"unexpected protoc output in {relative}: no default pool")
                text = text.replace(_DEFAULT_POOL, _PRIVATE_POOL)
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            written.append(target)
        return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--destination", type=Path, default=SOURCE_ROOT, help="source root (default: src)"
    )
    arguments = parser.parse_args()
    for path in generate(arguments.destination):
        print(path)


if __name__ == "__main__":
    main()
