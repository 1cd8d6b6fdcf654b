"""What every benchmark shares: thread settings, interleaved timing with medians, and the machine description that
makes a figure meaningful."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from importlib import metadata
from typing import TypeVar

# numpy's BLAS threads spin after each call and steal the cores ONNX Runtime needs (as in `onnxplain serve`):
# run.py sets these to 1 before numpy loads; the description reports them.
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

T = TypeVar("T")
_STARTED = time.perf_counter()

LIBRARIES = ("onnxruntime-gpu", "onnxruntime", "onnx", "numpy", "torch", "captum", "zennit", "grpcio")


def cpu_cores() -> int:
    """Cores this process may use (the container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Rounds:
    """Times several candidates in interleaved rounds, so a slow spell on a busy machine hits all of them alike;
    each candidate's figure is the median of its rounds."""

    def __init__(self) -> None:
        self.samples: dict[Hashable, list[float]] = defaultdict(list)

    def time(self, key: Hashable, work: Callable[[], T]) -> T:
        """Run `work` once, record its seconds under `key`, and hand back what it returned."""
        started = time.perf_counter()
        result = work()
        self.samples[key].append(time.perf_counter() - started)
        return result

    def median(self, key: Hashable) -> float:
        return statistics.median(self.samples[key])


def machine_description() -> dict[str, str]:
    return {
        "cpu": _cpu_model(),
        "cores": f"{cpu_cores()} usable ({os.cpu_count()} online)",
        "memory": _memory(),
        "gpu": _gpu(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": ", ".join(f"{name} {version}" for name, version in _versions().items()),
        "blas threads": ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in BLAS_THREAD_VARIABLES),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        with open("/proc/meminfo") as info:
            kib = int(next(line for line in info if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        return "unknown"
    return f"{kib / 2**20:.0f} GiB"


def _gpu() -> str:
    if shutil.which("nvidia-smi") is None:
        return "none"
    try:
        query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]
        names = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "none (nvidia-smi failed)"
    return names.replace("\n", "; ") or "none"


def _versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def settle(run: Callable[[], object], seconds: float) -> None:
    """Untimed runs for at least `seconds` (at least one): the previous candidate's idle ONNX Runtime threads spin
    for a while after its last run and would slow this one's first runs."""
    started = time.perf_counter()
    run()
    while time.perf_counter() - started < seconds:
        run()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: above the usable cores, something else ran beside the benchmark."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def log(message: str) -> None:
    """Progress goes to stderr, stamped with the seconds since the run started (where the time goes), so stdout
    holds the description and the table alone."""
    print(f"{time.perf_counter() - _STARTED:6.1f} s  {message}", file=sys.stderr, flush=True)


def print_description(description: dict[str, str], markdown: bool) -> None:
    for key, value in description.items():
        print(f"- {key}: {value}" if markdown else f"{key:>14}: {value}", flush=True)
    print(flush=True)


def print_results(columns: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool, started: float) -> None:
    """The table, then the load after the run and its duration (`started`: time.perf_counter() at its start)."""
    print_table(columns, rows, markdown)
    print()
    print(f"load after: {load_average()}; the run took {time.perf_counter() - started:.0f} s")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> None:
    """One row per line: Markdown for RESULTS.md, else left-aligned text columns."""
    if markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + "|".join("---" for _ in columns) + "|")
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return
    widths = [max(len(text) for text in column) for column in zip(columns, *rows, strict=True)]
    for line in (columns, *rows):
        print("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())
