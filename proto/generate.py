"""Generate the Python gRPC stubs: onnxplain.v1 into the client distribution, the Open Inference Protocol into the
server distribution.

onnxplain.v1 (proto/onnxplain/v1) is the API every client uses, so its stubs live in the client distribution as
`onnxplain.v1`, where protoc puts them by the file path.

The Open Inference Protocol (proto/inference/v2/grpc_predict_v2.proto, package `inference`) is only served, never
called, by onnxplain, so its stubs go into the server distribution, and never into the client: tritonclient and
other OIP clients register the same `inference.*` names in protobuf's process-wide descriptor pool, and a second
registration in one process fails. protoc names a Python module after the proto's path, and a top-level `inference`
package would collide with other installs, so the proto is compiled through protoc's virtual path mapping
(`-Ionnxplain/server=proto`): the file stays where proto tooling expects it (buf, other languages' loaders), and its
stubs become `onnxplain.server.inference.v2.grpc_predict_v2_pb2(_grpc)` with ordinary generated imports, nothing
copied or rewritten.

The stubs are committed; tests/test_proto.py regenerates both sets into a temporary folder and fails when they differ.
Usage: python proto/generate.py [CLIENT_ROOT SERVER_ROOT]   (default: client/src server/src)
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPOSITORY = PROTO_ROOT.parent
DEFAULT_CLIENT_OUTPUT = REPOSITORY / "client" / "src"
DEFAULT_SERVER_OUTPUT = REPOSITORY / "server" / "src"
# The Python package the OIP stubs live under (a virtual protoc path; see the module docstring).
SERVER_PACKAGE = "onnxplain/server"


def client_proto_files() -> list[str]:
    return [str(path.relative_to(PROTO_ROOT)) for path in sorted((PROTO_ROOT / "onnxplain").rglob("*.proto"))]


def server_proto_files() -> list[str]:
    paths = sorted((PROTO_ROOT / "inference").rglob("*.proto"))
    return [f"{SERVER_PACKAGE}/{path.relative_to(PROTO_ROOT).as_posix()}" for path in paths]


def generate(client_root: Path = DEFAULT_CLIENT_OUTPUT, server_root: Path = DEFAULT_SERVER_OUTPUT) -> None:
    _protoc(f"-I{PROTO_ROOT}", client_root, client_proto_files())
    _protoc(f"-I{SERVER_PACKAGE}={PROTO_ROOT}", server_root, server_proto_files())


def _protoc(include: str, output_root: Path, files: list[str]) -> None:
    output_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        include,
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    roots = [Path(arg) for arg in sys.argv[1:]]
    if len(roots) not in (0, 2):
        raise SystemExit("usage: python proto/generate.py [CLIENT_ROOT SERVER_ROOT]")
    generate(*roots)
