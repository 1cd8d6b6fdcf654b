"""The API contract: buf lint passes, and the committed stubs (onnxplain.v1 in the client, the Open Inference
Protocol in the server) are exactly what proto/ generates."""

from __future__ import annotations

import filecmp
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Stub folder -> where it is committed, relative to the generator's output roots (client/src, server/src).
STUBS = {
    ("client", "onnxplain/v1"): ROOT / "client" / "src" / "onnxplain" / "v1",
    ("server", "onnxplain/server/inference/v2"): ROOT / "server" / "src" / "onnxplain" / "server" / "inference" / "v2",
}


def test_buf_lint_passes() -> None:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert buf, "buf is a test dependency (buf-bin); install the test group"
    result = subprocess.run([buf, "lint"], cwd=ROOT / "proto", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_stubs_are_not_stale(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path / "client", tmp_path / "server")
    generated = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    expected = sorted(
        f"{root}/{folder}/{p.name}" for (root, folder), committed in STUBS.items() for p in _stubs(committed)
    )
    assert generated == expected, "stub files differ from proto/: run `make proto`"
    stale = [
        f"{folder}/{p.name}"
        for (root, folder), committed in STUBS.items()
        for p in _stubs(committed)
        if not filecmp.cmp(tmp_path / root / folder / p.name, p, shallow=False)
    ]
    assert not stale, f"stale stubs {stale}: run `make proto`"


@pytest.mark.parametrize("module", ["explain_service_pb2", "model_pb2", "tensor_pb2"])
def test_stubs_import_with_installed_runtime(module: str) -> None:
    importlib.import_module(f"onnxplain.v1.{module}")


def test_inference_protocol_stubs_import_in_the_server() -> None:
    """In a process of their own: tritonclient, which the OIP tests import here, registers the same protobuf names."""
    module = "onnxplain.server.inference.v2.grpc_predict_v2_pb2_grpc"
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _stubs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"})
