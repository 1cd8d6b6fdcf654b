"""What a gradient costs next to a forward pass: our backward graphs on ONNX Runtime against the plain forward and
against PyTorch's autograd on the same model.

Rows, per model and batch size, all in one process with the same threads (ONNX Runtime intra-op = torch = the
usable cores, numpy BLAS = 1), ONNX Runtime sessions under the server's own options (session.session_options):
  fwd        plain ONNX Runtime forward of the exported model;
  grad       forward + backward through our backward graph: the input gradient of one class per image (one-hot
             seed), every output read as the server reads it;
  cam        the Grad-CAM build: forward + backward to the last feature map, read out with its gradient;
  torch grad PyTorch forward + torch.autograd.grad of the same class score to the input (parameters frozen);
  torch cam  PyTorch forward + torch.autograd.grad to the last feature map (the input of the last global pool).
Every figure is the median of the timed runs over --repeat rounds; within a round each candidate first runs untimed
for a moment (the previous candidate's idle threads, ONNX Runtime's and torch's, spin after its last run and slow
the next one's first runs: measured, a cam run at batch 1 took twice its time in isolation), then a few times timed.
The claim is the ratios grad/fwd (target ≤ 3, goal 2.5) and ours/PyTorch (target < 1), not the milliseconds.

Separately, per model: building the input-gradient graph (fix the size, raise the opset, differentiate) and
creating its session, and creating the plain forward session.

    python bench/gradients.py [--models resnet50 mobilenet_v3] [--batches 1 16] [--repeat 3] [--markdown]
    python bench/gradients.py --quick    # a tiny CNN at 32x32, batch 1, in seconds (the smoke test runs this)
"""

from __future__ import annotations

import os

# Before numpy loads: numpy's BLAS threads spin after each call and steal ONNX Runtime's cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from common import Rounds, print_table, start_run
from models import MODELS, BenchModel, build, onnx_file
from torch import nn

from onnxplain.server.engine.backward.builder import SEED_INPUT, MissingRule, gradient_output
from onnxplain.server.engine.gradients import BackwardSpec, backward_graph
from onnxplain.server.engine.providers import CPU
from onnxplain.server.engine.session import create_session, session_options
from onnxplain.server.repository.signature import read_signature

DEFAULT_MODELS = ("resnet50", "mobilenet_v3")
DEFAULT_BATCHES = (1, 16)
# Timed runs per candidate and round: enough for a stable median at batch 1, a few at larger batches.
RUNS_PER_ROUND = {1: 10}
DEFAULT_RUNS = 2
# Untimed runs before a candidate's timed ones last at least this long (at least one run).
SETTLE_SECONDS = 0.3
TARGET_CLASS = 0
CACHE = Path(__file__).parent / ".cache"
INPUT_GRADIENT = BackwardSpec()
GRAD_CAM = BackwardSpec(input_gradient=False, cam_layer=True)
CANDIDATES = ("fwd", "grad", "cam", "torch grad", "torch cam")


@dataclass
class Subject:
    """One model: the torch module, the exported graph, and the sessions the rows run on."""

    spec: BenchModel
    module: nn.Module
    feature_pool: nn.Module  # the last global pool: its input is the feature map Grad-CAM reads
    forward: ort.InferenceSession
    gradient: ort.InferenceSession
    cam: ort.InferenceSession
    input_name: str
    classes: int


@dataclass(frozen=True)
class Setup:
    """Seconds to build the backward graph and to create the sessions (medians of --repeat)."""

    model: str
    build: float
    backward_session: float
    forward_session: float
    backward_nodes: int


@dataclass(frozen=True)
class Row:
    model: str
    batch: int
    seconds: dict[str, float]
    # ‖ours - torch's‖ / ‖torch's‖ over the input gradients: both did the same work. Not zero: float32 rounding
    # flips a few ReLUs of a deep random network near zero (torch's own float32 gradient is as far from float64's).
    gradient_gap: float

    def ratio(self, numerator: str, denominator: str) -> float:
        return self.seconds[numerator] / self.seconds[denominator]


def main() -> int:
    args = parse_args()
    threads = start_run(args.markdown)
    rows, setups = [], []
    for name in args.models:
        try:
            subject, setup = prepare(MODELS[name], threads, args.cache, args.repeat)
        except MissingRule as error:
            _log(f"{name}: no backward graph: {error}")
            continue
        setups.append(setup)
        for batch in args.batches:
            runs = 1 if args.quick else RUNS_PER_ROUND.get(batch, DEFAULT_RUNS)
            rows.append(measure(subject, batch, args.repeat, runs))
    print_table(COLUMNS, [_cells(row) for row in rows], args.markdown)
    print()
    print_table(SETUP_COLUMNS, [_setup_cells(setup) for setup in setups], args.markdown)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), help=f"default: {' '.join(DEFAULT_MODELS)}")
    parser.add_argument("--batches", nargs="+", type=int, help="batch sizes (default 1 16, --quick 1)")
    parser.add_argument("--repeat", type=int, help="rounds; each figure is the median of their runs (default 3)")
    parser.add_argument("--markdown", action="store_true", help="print the tables in Markdown, for RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="tiny CNN at 32x32, batch 1, one round of one run")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where exported ONNX files are kept")
    args = parser.parse_args()
    args.models = args.models or (["tiny_cnn"] if args.quick else list(DEFAULT_MODELS))
    args.batches = args.batches or ([1] if args.quick else list(DEFAULT_BATCHES))
    args.repeat = args.repeat or (1 if args.quick else 3)
    if min(args.batches) < 1:
        parser.error("--batches must be positive")
    return args


def prepare(spec: BenchModel, threads: int, cache: Path, repeat: int) -> tuple[Subject, Setup]:
    """Export (or reuse) the model, build its backward graphs and sessions, and time the builds and sessions."""
    module = build(spec)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    path = onnx_file(spec, module, cache)
    full = onnx.load(str(path))
    signature = read_signature(full)
    options = session_options(threads)
    timings = Rounds()
    for _ in range(repeat):
        graph = _copy(full)
        built, _ = timings.time("build", lambda g=graph: backward_graph(g, signature, spec.input_shape, INPUT_GRADIENT))
        gradient = timings.time("backward", lambda b=built: create_session(b.model, options, [CPU]))
        forward = timings.time("forward", lambda: create_session(path, options, [CPU]))
    cam_graph, _ = backward_graph(_copy(full), signature, spec.input_shape, GRAD_CAM)
    subject = Subject(
        spec=spec,
        module=module,
        feature_pool=[layer for layer in module.modules() if isinstance(layer, nn.AdaptiveAvgPool2d)][-1],
        forward=forward,
        gradient=gradient,
        cam=create_session(cam_graph.model, options, [CPU]),
        input_name=signature.input.name,
        classes=int(built.seed_shape[1]),
    )
    setup = Setup(
        model=_label(spec),
        build=timings.median("build"),
        backward_session=timings.median("backward"),
        forward_session=timings.median("forward"),
        backward_nodes=len(built.model.graph.node) - len(full.graph.node),
    )
    return subject, setup


def measure(subject: Subject, batch: int, repeat: int, runs: int) -> Row:
    images = np.random.default_rng(0).normal(size=(batch, *subject.spec.input_shape)).astype(np.float32)
    work = candidates(subject, images)
    rounds, results = Rounds(), {}
    for round_index in range(repeat):
        _log(f"{_label(subject.spec)} batch {batch}: round {round_index + 1}/{repeat}")
        for key, run in work.items():
            settle(run)
            for _ in range(runs):
                results[key] = rounds.time(key, run)
    ours, theirs = results["grad"], results["torch grad"]
    gap = float(np.linalg.norm(ours - theirs)) / max(float(np.linalg.norm(theirs)), 1e-12)
    return Row(_label(subject.spec), batch, {key: rounds.median(key) for key in work}, gap)


def settle(run: Callable[[], object]) -> None:
    started = time.perf_counter()
    run()
    while time.perf_counter() - started < SETTLE_SECONDS:
        run()


def candidates(subject: Subject, images: np.ndarray) -> dict[str, Callable[[], np.ndarray | None]]:
    """The five timed rows; the gradient rows hand back the input gradient, to compare ours with torch's."""
    seed = np.zeros((len(images), subject.classes), dtype=np.float32)
    seed[:, TARGET_CLASS] = 1.0
    image_feed = {subject.input_name: images}
    backward_feed = {**image_feed, SEED_INPUT: seed}
    gradient_index = [o.name for o in subject.gradient.get_outputs()].index(gradient_output(subject.input_name))
    return {
        "fwd": lambda: subject.forward.run(None, image_feed)[0],
        "grad": lambda: subject.gradient.run(None, backward_feed)[gradient_index],
        "cam": lambda: subject.cam.run(None, backward_feed)[0],
        "torch grad": lambda: torch_input_gradient(subject.module, images),
        "torch cam": lambda: torch_feature_map_gradient(subject.module, subject.feature_pool, images),
    }


def torch_input_gradient(module: nn.Module, images: np.ndarray) -> np.ndarray:
    inputs = torch.from_numpy(images).requires_grad_(True)
    (gradient,) = torch.autograd.grad(module(inputs)[:, TARGET_CLASS].sum(), inputs)
    return gradient.numpy()


def torch_feature_map_gradient(module: nn.Module, pool: nn.Module, images: np.ndarray) -> np.ndarray:
    """Grad-CAM's gradient: the class score's gradient with respect to the pool's input, nothing further back."""
    seen: list[torch.Tensor] = []
    hook = pool.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        # The input requires grad only so the feature map is part of the autograd graph (parameters are frozen).
        scores = module(torch.from_numpy(images).requires_grad_(True))
    finally:
        hook.remove()
    (gradient,) = torch.autograd.grad(scores[:, TARGET_CLASS].sum(), seen[0])
    return gradient.numpy()


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy to build from: the build modifies the graph it is given."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _label(spec: BenchModel) -> str:
    return f"{spec.name} {spec.size}x{spec.size}"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


COLUMNS = (
    "model",
    "batch",
    "fwd ms",
    "grad ms",
    "cam ms",
    "torch grad ms",
    "torch cam ms",
    "grad/fwd",
    "cam/fwd",
    "grad/torch",
    "cam/torch",
    "grad vs torch",
)


def _cells(row: Row) -> list[str]:
    return [
        row.model,
        str(row.batch),
        *(f"{row.seconds[key] * 1000:.1f}" for key in CANDIDATES),
        f"{row.ratio('grad', 'fwd'):.2f}",
        f"{row.ratio('cam', 'fwd'):.2f}",
        f"{row.ratio('grad', 'torch grad'):.2f}",
        f"{row.ratio('cam', 'torch cam'):.2f}",
        f"{row.gradient_gap:.1e}",
    ]


SETUP_COLUMNS = ("model", "build s", "backward session s", "forward session s", "backward nodes")


def _setup_cells(setup: Setup) -> list[str]:
    return [
        setup.model,
        f"{setup.build:.3f}",
        f"{setup.backward_session:.3f}",
        f"{setup.forward_session:.3f}",
        str(setup.backward_nodes),
    ]


if __name__ == "__main__":
    sys.exit(main())
