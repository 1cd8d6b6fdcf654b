"""The API contract: buf lint passes, and the committed stubs are exactly what proto/ generates."""

from __future__ import annotations

import filecmp
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "client" / "src" / "onnxplain" / "v1"


def test_buf_lint_passes() -> None:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert buf, "buf is a test dependency (buf-bin); install the test group"
    result = subprocess.run([buf, "lint"], cwd=ROOT / "proto", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_stubs_are_not_stale(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    fresh = tmp_path / "onnxplain" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    committed = sorted(p.name for p in STUBS.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"})
    assert names == committed, "stub files differ from proto/: run `make proto`"
    stale = [name for name in names if not filecmp.cmp(fresh / name, STUBS / name, shallow=False)]
    assert not stale, f"stale stubs {stale}: run `make proto`"


@pytest.mark.parametrize("module", ["explain_service_pb2", "model_pb2", "tensor_pb2"])
def test_stubs_import_with_installed_runtime(module: str) -> None:
    importlib.import_module(f"onnxplain.v1.{module}")
