"""`bench/placement.py` on the CPU: every method it is asked for gets a row, and every session the engine created
reports the provider that ran its nodes. (On a GPU it shows CPU fallbacks and GPU-against-CPU map gaps; here the
two engines are one, so the gap is zero.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
METHODS = ("saliency", "rise", "lrp")


def test_placement_reports_each_method_and_the_sessions_providers(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCH / "placement.py"), "--device", "cpu", "--models", "digits"]
    command += ["--methods", *METHODS, "--cache", str(tmp_path / "cache"), "--markdown"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=280, check=False, cwd=BENCH)
    assert run.returncode == 0, run.stderr
    rows = [line.split("|")[1:-1] for line in run.stdout.splitlines() if line.startswith("| digits")]
    calls = {cells[1].strip(): cells for cells in rows if len(cells) == 5}
    assert set(calls) == set(METHODS)
    assert all(cells[4].strip() == "0.0e+00" for cells in calls.values())
    sessions = [cells for cells in rows if len(cells) == 3]
    created_by = {cells[0].strip() for cells in sessions}
    # The model's own session at load, the backward graphs of saliency and LRP, and RISE's fold product (RISE runs
    # on the host on CPUs, and folds its masks with a MatMul session of its own: engine/products.py).
    assert created_by == {"digits load", "digits saliency", "digits rise", "digits lrp"}
    assert all(cells[1].strip().startswith("CPU ") for cells in sessions)
