"""The benchmarks run end to end (tiny CNN, `--quick`) and print their tables.

Nothing here is about speed: timings are the benchmark's business, read as ratios, never asserted in tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "bench" / "perturbation.py"
HEADER = ("model", "windows", "b/a", "c/a", "d/c")


def run_quick(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BENCHMARK), "--quick", "--cache", str(tmp_path / "cache"), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def test_quick_run_prints_the_table(tmp_path: Path) -> None:
    result = run_quick(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next((line for line in lines if all(column in line for column in HEADER)), None)
    assert header is not None, result.stdout
    assert any(line.lstrip().startswith("tiny_cnn 32x32") for line in lines), result.stdout
    assert "cpu:" in result.stdout


def test_markdown_table(tmp_path: Path) -> None:
    result = run_quick(tmp_path, "--markdown", "--num", "8")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| tiny_cnn")]
    assert len(rows) == 1, result.stdout
    assert "| model |" in result.stdout


GRADIENTS = BENCHMARK.parent / "gradients.py"
GRADIENT_HEADER = ("model", "grad/fwd", "grad/torch", "cam/torch", "grad vs torch")


def test_gradient_benchmark_quick_run_prints_the_tables(tmp_path: Path) -> None:
    command = [sys.executable, str(GRADIENTS), "--quick", "--cache", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(all(column in line for column in GRADIENT_HEADER) for line in lines), result.stdout
    assert any("build s" in line and "backward session s" in line for line in lines), result.stdout
    assert sum(line.lstrip().startswith("tiny_cnn 32x32") for line in lines) == 2, result.stdout
