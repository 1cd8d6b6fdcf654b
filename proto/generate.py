"""Generate the Python gRPC stubs for onnxplain.v1 into the client distribution.

The stubs are committed; tests/test_proto.py regenerates them into a temporary folder and fails when they differ.
Usage: python proto/generate.py [OUTPUT_ROOT]   (default: client/src)
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUTPUT = PROTO_ROOT.parent / "client" / "src"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "onnxplain").rglob("*.proto"))


def generate(output_root: Path) -> None:
    output_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT)
