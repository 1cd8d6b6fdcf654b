"""The server's resident memory under a sweep of every method over the benchmark's models (#17), for the code in this
checkout and for a checkout of earlier code, each in a live `onnxplain serve` on the same machine.

Each server loads MobileNetV3-Large and ResNet-50 at 224x224 with 10-class heads (models.py) and is asked
for every method it lists on each model, one call at a time, with the cheap parameters of the conformance tests
(tests/support/zoo.py): a few samples, steps and masks, occlusion windows a quarter of the side. Score-CAM has no
such parameter: a pass per channel of the last feature map (960 and 2048). The figures, from /proc/<pid>/status:
resident memory once the models are loaded (baseline), the peak during the sweep (VmHWM, reset at the baseline and
before each call, so the call that reached it is known), resident memory right after the last call, and again once
the server has been idle for IDLE_SECONDS. Where the server reports its derived-graph memory (Prometheus, #17), what
it held at the end and how many graphs it evicted.

    git worktree add --detach /tmp/onnxplain-84dac3d 84dac3d
    python bench/memory_sweep.py --previous /tmp/onnxplain-84dac3d [--current CHECKOUT] [--budget MIB ...] [--markdown]

The current code is this checkout, or with --current another checkout (a worktree of a commit, so that work in
progress in this one does not count); it is swept at the defaults and then under each --budget. A checkout other
than this one runs from its sources (PYTHONPATH) in this checkout's virtual environment; the table names each by its
commit.
"""

from __future__ import annotations

import os

# Before numpy loads, as in run.py: numpy's BLAS threads would compete with ONNX Runtime's for the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import cpu_cores, load_average, log, machine_description, print_description, print_results
from models import BenchModel, onnx_file, torch_module
from plan import MOBILENET, RESNET

from onnxplain.client import Client, OnnxplainError

# The tests' helpers: the same server start and the same cheap parameters as the conformance tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.resident import derived_gauges, memory, reset_peak
from support.servers import RunningServer, free_port, start_server
from support.zoo import cheap_parameters

# 10-class heads: the methods that explain every class (active and inactive saliency, CLEAR) run a backward pass per
# class, and a thousand of them took minutes per method on 2 cores.
MODELS = tuple(dataclasses.replace(model, classes=10) for model in (MOBILENET, RESNET))
THIS_CHECKOUT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).parent / ".cache"
MIB = 1024 * 1024
IDLE_SECONDS = 5.0
CALL_TIMEOUT = 900.0
COLUMNS = (
    "code",
    "flags",
    "baseline MiB",
    "peak MiB (+ over baseline)",
    "peak call",
    "after sweep MiB (+)",
    f"idle {IDLE_SECONDS:.0f} s MiB (+)",
    "derived held MiB / graphs / evictions",
    "calls ok",
    "sweep s",
)


@dataclass(frozen=True)
class Code:
    """A version of onnxplain to serve: its name in the table and the source folders it runs from (none: this
    checkout, as installed)."""

    name: str
    sources: tuple[Path, ...] = ()

    @property
    def environment(self) -> dict[str, str]:
        if not self.sources:
            return {}
        return {"PYTHONPATH": os.pathsep.join(str(path) for path in self.sources)}


@dataclass(frozen=True)
class Result:
    code: str
    flags: str
    baseline: int
    peak: int
    peak_call: str
    after: int
    idle: int
    derived: str
    calls: str
    seconds: float

    def cells(self) -> list[str]:
        return [
            self.code,
            self.flags or "(defaults)",
            _mib(self.baseline),
            f"{_mib(self.peak)} (+{_mib(self.peak - self.baseline)})",
            self.peak_call,
            f"{_mib(self.after)} (+{_mib(self.after - self.baseline)})",
            f"{_mib(self.idle)} (+{_mib(self.idle - self.baseline)})",
            self.derived,
            self.calls,
            f"{self.seconds:.0f}",
        ]


def main() -> int:
    args = parse_args()
    threads = cpu_cores()
    description = machine_description()
    description["threads"] = f"ONNX Runtime intra-op {threads} (--threads)"
    description["load before"] = load_average()
    print_description(description, args.markdown)
    started = time.perf_counter()
    current = _checkout(args.current) if args.current else Code(_commit(THIS_CHECKOUT))
    runs: list[tuple[Code, tuple[str, ...]]] = []
    if args.previous:
        runs.append((_checkout(args.previous), ()))
    runs.append((current, ()))
    runs += [(current, ("--memory-budget", str(budget))) for budget in args.budget]
    with tempfile.TemporaryDirectory(prefix="onnxplain-memory-") as workspace:
        repository = _repository(Path(workspace), args.cache)
        results = [sweep(repository, code, flags, threads) for code, flags in runs]
    print_results(COLUMNS, [result.cells() for result in results], args.markdown, started)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--previous", type=Path, help="a checkout of earlier code to sweep as well, first")
    parser.add_argument("--current", type=Path, help="the checkout of the current code (default: this one)")
    parser.add_argument(
        "--budget",
        type=int,
        nargs="*",
        default=[1024],
        metavar="MIB",
        help="also sweep the current code under these --memory-budget values (default 1024; none: leave out)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown, for RESULTS.md")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where exported ONNX files are kept")
    return parser.parse_args()


def _checkout(path: Path) -> Code:
    path = path.resolve()
    return Code(_commit(path), (path / "server/src", path / "client/src"))


def _commit(checkout: Path) -> str:
    """The checkout's commit, and whether the server's or client's sources differ from it."""
    commit = _git(checkout, "rev-parse", "--short", "HEAD").strip()
    changed = _git(checkout, "status", "--porcelain", "--", "server/src", "client/src").strip()
    return f"{commit} + uncommitted changes" if changed else commit


def _git(checkout: Path, *arguments: str) -> str:
    command = ["git", "-C", str(checkout), *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _repository(workspace: Path, cache: Path) -> Path:
    repository = workspace / "repository"
    for model in MODELS:
        folder = repository / model.name / "1"
        folder.mkdir(parents=True)
        shutil.copyfile(onnx_file(model, torch_module(model), cache), folder / "model.onnx")
    return repository


def sweep(repository: Path, code: Code, flags: tuple[str, ...], threads: int) -> Result:
    """Every method on every model, one call at a time, in a fresh server of `code`."""
    log(f"{code.name} {' '.join(flags)}: starting")
    metrics_port = free_port()
    extra = ("--threads", str(threads), "--metrics-port", str(metrics_port), "--log-level", "WARNING", *flags)
    with _environment(code.environment):
        _check_sources(code)
        server = start_server(repository, *extra, timeout=600)
    pid = server.process.pid
    try:
        with Client(server.target, timeout=CALL_TIMEOUT) as client:
            methods = [method.name for method in client.methods()]
            baseline = memory(pid)["VmRSS"]
            peak, peak_call, ok, calls = 0, "", 0, 0
            started = time.perf_counter()
            for model in MODELS:
                image = np.random.default_rng(0).standard_normal(model.input_shape, np.float32)
                cheap = cheap_parameters(model.size)
                for method in methods:
                    reset_peak(pid)
                    call_started = time.perf_counter()
                    ok += _call(client, model, image, method, cheap.get(method, {}))
                    calls += 1
                    reading = memory(pid)
                    call_peak = reading["VmHWM"]
                    log(
                        f"{method} on {model.architecture}: {time.perf_counter() - call_started:.1f} s, peak "
                        f"{_mib(call_peak)} MiB, after {_mib(reading['VmRSS'])} MiB"
                    )
                    if call_peak > peak:
                        peak, peak_call = call_peak, f"{method} on {model.architecture}"
            seconds = time.perf_counter() - started
            after = memory(pid)["VmRSS"]
            time.sleep(IDLE_SECONDS)
            idle = memory(pid)["VmRSS"]
        result = Result(
            code.name,
            " ".join(flags),
            baseline,
            peak,
            peak_call,
            after,
            idle,
            _derived(metrics_port),
            f"{ok}/{calls}",
            seconds,
        )
        log(" | ".join(result.cells()))
        return result
    finally:
        _stop(server)


def _call(client: Client, model: BenchModel, image: np.ndarray, method: str, parameters: dict) -> bool:
    try:
        client.explain(model.name, image, method=method, target=1, **parameters)
    except OnnxplainError as error:
        log(f"{method} on {model.name}: {error.code.name} {error.message[:200]}")
        return False
    return True


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` for the block: start_server hands its environment to the server."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def _check_sources(code: Code) -> None:
    """Refuse to measure if the server would not import onnxplain from the code's sources."""
    found = subprocess.run(
        [sys.executable, "-c", "import onnxplain.server; print(onnxplain.server.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    ).stdout.strip()
    expected = code.sources[0] if code.sources else THIS_CHECKOUT / "server/src"
    if not Path(found).resolve().is_relative_to(expected.resolve()):
        raise SystemExit(f"{code.name}: onnxplain.server comes from {found}, not from {expected}")
    log(f"{code.name}: onnxplain.server from {found}")


def _derived(metrics_port: int) -> str:
    """The derived-graph memory the server reports, or a dash where it reports none (code before #17's budget)."""
    gauges = derived_gauges(metrics_port)
    if not gauges:
        return "-"
    used, sessions, evictions = gauges["memory_used_bytes"], gauges["sessions"], gauges["evictions_total"]
    return f"{_mib(int(used))} / {sessions:.0f} / {evictions:.0f}"


def _stop(server: RunningServer) -> None:
    code = server.stop()
    if code != 0:
        log(f"the server exited with {code}:\n" + "".join(server.output[-20:]))


def _mib(size: int) -> str:
    return f"{size / MIB:.0f}"


if __name__ == "__main__":
    sys.exit(main())
