"""How much a process computes, from /proc: tells whether a server really stopped working after a cancel.

Measured in CPU seconds, not wall seconds, so that a busy machine does not change the verdict: a server that kept
computing a cancelled job spends that job's CPU time however long it waits for a core. A cancelled job is judged
against a reference run of a known fraction of the same work on the same server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from support.waiting import CEILING_SECONDS

# A server with nothing to do uses next to no CPU; a computing one gets far more even on a loaded machine.
IDLE_FRACTION = 0.1
_IDLE_WINDOW_SECONDS = 1.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_fraction(pid: int, seconds: float = 1.0) -> float:
    """CPU seconds the process used per wall second over the next `seconds`."""
    start = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - start) / seconds


def cpu_of(pid: int, work: Callable[[], object]) -> float:
    """CPU seconds process `pid` spent while `work` ran (a call it served, from arrival to answer)."""
    start = cpu_seconds(pid)
    work()
    return cpu_seconds(pid) - start


def cpu_until_idle(pid: int, ceiling: float = CEILING_SECONDS) -> float:
    """CPU seconds the process spends from now until it is idle (a window in which it computed less than
    IDLE_FRACTION of one core). A process still busy at the ceiling fails: its work did not stop."""
    start = cpu_seconds(pid)
    deadline = time.monotonic() + ceiling
    while busy_fraction(pid, _IDLE_WINDOW_SECONDS) >= IDLE_FRACTION:
        assert time.monotonic() < deadline, f"process {pid} was still computing after {ceiling:.0f} s"
    return cpu_seconds(pid) - start


def cpu_until_used(pid: int, seconds: float, ceiling: float = CEILING_SECONDS) -> None:
    """Wait until the process has computed `seconds` more CPU seconds (its work has surely started)."""
    target = cpu_seconds(pid) + seconds
    deadline = time.monotonic() + ceiling
    while cpu_seconds(pid) < target:
        assert time.monotonic() < deadline, f"process {pid} did not compute {seconds} CPU s within {ceiling:.0f} s"
        time.sleep(0.05)
