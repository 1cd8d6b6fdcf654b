"""Where every method runs, and whether it computes the same map there: each method's explain call on each bench
model, on the device's provider and on the CPU provider, with ONNX Runtime's profiler on for every session the
engine creates (the model's own and each derived graph: backward, RISE).

A node the CUDA provider cannot run falls back to the CPU provider, and its inputs and outputs cross the bus on every
run (Memcpy nodes); the table names such nodes per call, and how far the device's map is from the CPU's (relative to
the CPU map's largest value: TF32 convolutions on the GPU stay near 1e-3).

    python bench/placement.py [--device cuda] [--models digits mobilenet_v3 resnet50] [--markdown]
"""

from __future__ import annotations

import os

# Before numpy loads, as in run.py.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import cpu_cores, machine_description, print_description, print_table
from engine import Engine
from models import DIGITS, BenchModel
from plan import FULL, MOBILENET, RESNET

from onnxplain.server.errors import FailedPrecondition
from onnxplain.server.methods.registry import METHODS

MODELS = {"digits": DIGITS, "mobilenet_v3": MOBILENET, "resnet50": RESNET}
# Parameters that keep every call to seconds on a CPU; the rest are the methods' defaults. Segments on a grid: SLIC
# needs opencv-contrib, which a GPU image may lack.
SMALL = {
    "rise": {"num_masks": 256},
    "lime": {"num_samples": 64, "segmentation": "grid"},
    "kernel_shap": {"num_samples": 64, "segmentation": "grid"},
    "feature_ablation": {"segmentation": "grid"},
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"samples": 4},
    "smoothgrad_sq": {"samples": 4},
    "vargrad": {"samples": 4},
    "feature_visualization": {"steps": 8},
    "prediction_difference": {"num_samples": 2},
}
CALL_COLUMNS = ("model", "method", "device ms", "cpu ms", "map gap")
SESSION_COLUMNS = ("created by", "nodes by provider", "nodes on the CPU provider")


@dataclass
class Profiled:
    """Every session created while the recorder is on, with the call that created it."""

    folder: Path
    sessions: list[tuple[str, ort.InferenceSession]] = field(default_factory=list)
    current: str = "load"

    @contextmanager
    def recording(self) -> Iterator[None]:
        """ONNX Runtime's profiler on for the sessions the engine creates meanwhile. The server has no profiling
        switch (a profile is written only when asked for), so this swaps the class the engine creates sessions
        with (engine/session.py calls ort.InferenceSession; on CUDA once per input shape) for a profiling one."""
        original, recorder = ort.InferenceSession, self

        class ProfiledSession(original):
            def __init__(self, source: object, options: ort.SessionOptions, providers: list) -> None:
                options.enable_profiling = True
                options.profile_file_prefix = str(recorder.folder / f"session{len(recorder.sessions)}")
                super().__init__(source, options, providers=providers)
                recorder.sessions.append((recorder.current, self))

        ort.InferenceSession = ProfiledSession
        try:
            yield
        finally:
            ort.InferenceSession = original

    def placements(self, device: str) -> list[list[str]]:
        """One row per session the `device` engine created: the call that created it (later calls may reuse it),
        its nodes by provider, and the op types placed on the CPU provider."""
        rows = []
        for label, session in self.sessions:
            if not label.endswith(f" on {device}"):
                continue
            nodes = {}
            for event in json.loads(Path(session.end_profiling()).read_text()):
                if event.get("cat") == "Node" and "provider" in event.get("args", {}):
                    nodes[event["name"]] = (event["args"]["provider"], event["args"]["op_name"])
            if not nodes:
                continue  # never ran (the limit's session beside the engine's)
            providers = Counter(provider.removesuffix("ExecutionProvider") for provider, _ in nodes.values())
            cpu_ops = Counter(op for provider, op in nodes.values() if provider == "CPUExecutionProvider")
            rows.append(
                [
                    label.removesuffix(f" on {device}"),
                    ", ".join(f"{provider} {n}" for provider, n in providers.most_common()),
                    ", ".join(f"{op} {n}" for op, n in cpu_ops.most_common()) or "-",
                ]
            )
        return rows


def main() -> int:
    args = parse_args()
    threads = cpu_cores()
    description = machine_description()
    with tempfile.TemporaryDirectory(prefix="onnxplain-placement-") as workspace:
        root = Path(workspace)
        profiled = Profiled(root / "profiles")
        profiled.folder.mkdir()
        engines = {}
        for device in dict.fromkeys((args.device, "cpu")):
            (root / device).mkdir()
            engines[device] = Engine(root / device, threads, Path(args.cache), FULL, device)
        description["providers"] = ", ".join(str(p) for p in engines[args.device].providers)
        print_description(description, args.markdown)
        table = []
        with profiled.recording():
            for name in args.models:
                table.extend(model_rows(profiled, engines, args.device, MODELS[name], args.methods))
        print_table(CALL_COLUMNS, table, args.markdown)
        print()
        print_table(SESSION_COLUMNS, profiled.placements(args.device), args.markdown)
    return 0


def model_rows(
    profiled: Profiled, engines: dict[str, Engine], device: str, spec: BenchModel, methods: list[str]
) -> list[list[str]]:
    """One row per method: its time on the device and on the CPU, and how far apart the two maps are."""
    served = {}
    for key, engine in engines.items():
        profiled.current = f"{spec.name} load on {key}"
        served[key] = engine.serve(spec)
    rows = []
    for method in methods:
        params = SMALL.get(method, {})
        times, maps = {}, {}
        try:
            for key, engine in engines.items():
                profiled.current = f"{spec.name} {method} on {key}"
                started = time.perf_counter()
                result = engine.explain(served[key], method, params)
                times[key] = time.perf_counter() - started
                maps[key] = result.explanations[0].attributions[0].attribution
        except FailedPrecondition as error:
            rows.append([spec.label, method, "-", "-", f"unavailable: {error}"])
            continue
        gap = np.abs(maps[device] - maps["cpu"]).max() / max(float(np.abs(maps["cpu"]).max()), 1e-12)
        rows.append([spec.label, method, f"{times[device] * 1000:.1f}", f"{times['cpu'] * 1000:.1f}", f"{gap:.1e}"])
        print(f"{spec.name} {method}: {rows[-1][2]} ms, gap {gap:.1e}", file=sys.stderr, flush=True)
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=sorted(METHODS))
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--cache", default=str(Path(__file__).parent / ".cache"))
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
