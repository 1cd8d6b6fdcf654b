"""`bench/run.py --quick` runs every row family end to end on tiny models and prints one table with all of them.

Nothing here is about speed: timings are the benchmark's business, read as ratios, never asserted in tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
FAMILIES = {1, 2, 3, 4, 5, 6}
# One row per case of the quick plan (bench/plan.py QUICK): RISE and occlusion on 2 models, 5 gradient methods on
# 1, RISE and active saliency for 2 heads, RISE and saliency through gRPC, predict and saliency at 1 batch delay,
# and the scaling rows (2 sizes x 2 methods, 1 mask count, 1 step count).
ROWS_PER_FAMILY = {1: 4, 2: 5, 3: 4, 4: 2, 5: 2, 6: 6}
# A Markdown cell border: a pipe not escaped as part of a cell's text.
CELL_BORDER = re.compile(r"(?<!\\)\|")


def run_bench(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BENCH / "run.py"), "--quick", "--cache", str(tmp_path / "cache"), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=280, check=False)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    return run_bench(tmp_path_factory.mktemp("bench"))


def table_lines(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The header's cells and every row's cells of the text table (columns are two or more spaces apart)."""
    lines = stdout.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("#  row"))
    split = [[cell for cell in line.split("  ") if cell.strip()] for line in lines[start:]]
    header, rows = split[0], [row for row in split[1:] if row and row[0].strip().isdigit()]
    return [cell.strip() for cell in header], rows


def test_the_table_has_every_row_family(quick_run: subprocess.CompletedProcess[str]) -> None:
    assert quick_run.returncode == 0, quick_run.stderr
    header, rows = table_lines(quick_run.stdout)
    for column in ("ours ms", "limit ms", "peer ms", "ours/limit", "peer/ours", "target", "met", "ms/pass"):
        assert column in header
    counts = {family: sum(row[0].strip() == str(family) for row in rows) for family in FAMILIES}
    assert counts == ROWS_PER_FAMILY, quick_run.stdout


def test_the_run_describes_the_machine_and_its_load(quick_run: subprocess.CompletedProcess[str]) -> None:
    assert quick_run.returncode == 0, quick_run.stderr
    for key in ("cpu:", "cores:", "gpu:", "libraries:", "threads:", "load before:"):
        assert key in quick_run.stdout
    assert "load after:" in quick_run.stdout.splitlines()[-1]


def test_markdown_table_of_chosen_rows(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "--markdown", "--rows", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| # |"))
    rows = [line for line in lines if line.startswith("| 1 |")]
    assert len(rows) == ROWS_PER_FAMILY[1], result.stdout
    assert all(len(CELL_BORDER.findall(row)) == len(CELL_BORDER.findall(header)) for row in rows)
    assert "- cpu:" in result.stdout
