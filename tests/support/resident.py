"""A server process's memory, from /proc and from its own /metrics: the memory sweep tests and bench/memory_sweep.py
read the same figures the same way."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DERIVED = "onnxplain_derived_"


def memory(pid: int) -> dict[str, int]:
    """/proc/<pid>/status's VmRSS (resident now), VmHWM (the peak since the last reset) and VmSize, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "VmSize"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh from the resident memory now (proc(5): writing 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def derived_gauges(metrics_port: int) -> dict[str, float]:
    """The server's derived-graph memory metrics, named without their common prefix; empty from code that has none."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        sample.name.removeprefix(DERIVED): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(DERIVED)
    }
