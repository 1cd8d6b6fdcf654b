"""How close our perturbation methods come to plain ONNX Runtime forward passes, and how they compare to Captum.

Rows, per model, all in one process with the same threads (ONNX Runtime intra-op = torch = the usable cores, numpy
BLAS = 1):
  a  plain ONNX Runtime forwards of N images at the best batch size: the limit (the engine's own session, so the
     same session options);
  b  our RISE with N masks, end to end through handlers.explain, masks blended and accumulated on the host;
  b' the same RISE with masks, blend, model and accumulation in one derived ONNX graph per batch (rise_graph.py;
     the graph is built once per model, in the warm-up);
  c  our occlusion with about N windows (exact count reported; compared with `a` scaled to that count);
  d  Captum's Occlusion on the same torch model, same windows and baseline, at its best perturbations_per_eval.
Every figure is the median of --repeat rounds; the rows are interleaved within a round so a slow spell on a busy
machine hits all of them alike. The claim is the ratios b/a, c/a and d/c, not the seconds.

    python bench/perturbation.py [--models resnet50 mobilenet_v3] [--num N] [--repeat 3] [--markdown]
    python bench/perturbation.py --quick    # a tiny CNN at 32x32 in seconds (the smoke test runs this)
"""

from __future__ import annotations

import os

# Before numpy loads: numpy's BLAS threads spin after each call and steal ONNX Runtime's cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from captum.attr import Occlusion
from common import Rounds, print_table, start_run
from models import MODELS, BenchModel, build, onnx_file

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.schema import ExplainQuery, ExplainResult, ImageInput, TargetQuery
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

BATCH_SIZES = (1, 8, 16, 32, 64)
PERTURBATIONS_PER_EVAL = (1, 16, 64)
# Sized so every row takes seconds and the full default run a few minutes on a 2-core CPU (measured here:
# ResNet-50 ~25 img/s, MobileNetV3 ~300 img/s). The ratios are the claim, not N.
DEFAULT_NUM = {"mobilenet_v3": 1024, "resnet50": 128, "tiny_cnn": 64}
DEFAULT_MODELS = ("mobilenet_v3", "resnet50")
QUICK_NUM = 32
# Short runs before timing: allocations and lazy initialisation stay out of the rounds.
WARM_UP_COUNT = 64
# Batch sizes are ranked on this many images (fastest of a few trials); the best ones are timed in the rounds.
BATCH_SELECTION_IMAGES = 64
BATCH_SELECTION_TRIALS = 3
BATCH_FINALISTS = 2
# Captum's perturbations_per_eval is chosen on about this many windows.
CAPTUM_SELECTION_WINDOWS = 64
CACHE = Path(__file__).parent / ".cache"
MODEL_VERSION = "1"


@dataclass
class Subject:
    """One model under test: the torch module (Captum's side), the engine's loaded model, an image and its target."""

    spec: BenchModel
    module: torch.nn.Module
    registry: ModelRegistry
    model: LoadedModel
    image: np.ndarray
    target: int
    num: int


@dataclass(frozen=True)
class Row:
    model: str
    num: int
    windows: int
    batch: int
    engine_batch: int
    perturbations_per_eval: int
    forwards: float
    rise: float | None
    rise_graph: float | None
    occlusion: float
    captum: float
    occlusion_gap: float  # max |ours - Captum's| over the map, relative to the map's max |value|

    @property
    def forwards_for_windows(self) -> float:
        return self.forwards * self.windows / self.num

    def ratios(self) -> tuple[float | None, float | None, float, float]:
        rise_ratio = None if self.rise is None else self.rise / self.forwards
        graph_ratio = None if self.rise_graph is None else self.rise_graph / self.forwards
        return rise_ratio, graph_ratio, self.occlusion / self.forwards_for_windows, self.captum / self.occlusion


def main() -> int:
    args = parse_args()
    threads = start_run(args.markdown)
    if "rise" not in METHODS:
        _log("note: the 'rise' method is not registered in this build; its row is left empty")
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxplain-bench-") as repository:
        settings = ServerSettings(model_repository=Path(repository), device="cpu", threads=threads)
        for name in args.models:
            num = args.num or (QUICK_NUM if args.quick else DEFAULT_NUM[name])
            subject = prepare(MODELS[name], num, settings, args.cache)
            rows.append(measure(subject, settings, args.repeat))
            subject.registry.unload(name)
    print_table(COLUMNS, [_cells(row) for row in rows], args.markdown)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), help=f"default: {' '.join(DEFAULT_MODELS)}")
    parser.add_argument("--num", type=int, help="N: images, masks and (about) windows; default: per model")
    parser.add_argument("--repeat", type=int, help="rounds; each figure is their median (default 3, --quick 1)")
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown, for RESULTS.md")
    parser.add_argument("--quick", action="store_true", help=f"tiny CNN at 32x32, N={QUICK_NUM}, one round")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where exported ONNX files are kept")
    args = parser.parse_args()
    args.models = args.models or (["tiny_cnn"] if args.quick else list(DEFAULT_MODELS))
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.num is not None and args.num < 1:
        parser.error("--num must be positive")
    return args


def prepare(spec: BenchModel, num: int, settings: ServerSettings, cache: Path) -> Subject:
    """Export (or reuse) the model, serve it from a temporary repository, and pick an image and its top class."""
    module = build(spec)
    folder = settings.model_repository / spec.name / MODEL_VERSION
    folder.mkdir(parents=True)
    # A copy: the server refuses model files that link outside their folder.
    shutil.copyfile(onnx_file(spec, module, cache), folder / "model.onnx")
    registry = ModelRegistry(settings.model_repository, lambda source: load_model(source, settings))
    registry.load(spec.name)
    model = registry.get(spec.name)
    image = np.random.default_rng(0).normal(size=spec.input_shape).astype(np.float32)
    target = int(np.argmax(model.session.run(image[None])[0]))
    return Subject(spec, module, registry, model, image, target, num)


def measure(subject: Subject, settings: ServerSettings, repeat: int) -> Row:
    num, size = subject.num, subject.spec.size
    side, windows = occlusion_geometry(size, num)
    rise = "rise" in METHODS
    engine_batch = warm_up(subject, settings, rise)
    finalists = rank_batch_sizes(subject, engine_batch)[:BATCH_FINALISTS]
    per_eval = choose_perturbations_per_eval(subject)
    candidates: dict[tuple, Callable[[], object]] = {("a", b): _forwards(subject, num, b) for b in finalists}
    if rise:
        candidates["b",] = lambda: run_rise(subject, settings, "host", {"num_masks": num, "seed": 0})
        candidates["b'",] = lambda: run_rise(subject, settings, "graph", {"num_masks": num, "seed": 0})
    candidates["c",] = lambda: run_explain(subject, settings, "occlusion", _occlusion_params(side))
    candidates["d",] = _captum(subject, side, per_eval)

    rounds, results = Rounds(), {}
    for round_index in range(repeat):
        _log(f"{subject.spec.name}: round {round_index + 1}/{repeat}")
        for key, work in candidates.items():
            results[key] = rounds.time(key, work)

    ours = results["c",]
    (_, batch), forwards = rounds.fastest([("a", b) for b in finalists])
    return Row(
        model=f"{subject.spec.name} {size}x{size}",
        num=num,
        windows=windows,
        batch=batch,
        engine_batch=ours.cost.batch_size,
        perturbations_per_eval=per_eval,
        forwards=forwards,
        rise=rounds.median(("b",)) if rise else None,
        rise_graph=rounds.median(("b'",)) if rise else None,
        occlusion=rounds.median(("c",)),
        captum=rounds.median(("d",)),
        occlusion_gap=relative_gap(ours.explanations[0].attributions[0].attribution, results["d",]),
    )


def rank_batch_sizes(subject: Subject, engine_batch: int) -> list[int]:
    """Batch sizes by forward throughput, fastest first, among the usual sizes and the one the engine picked (so
    the limit is never slower than the engine's own batching). Each is timed a few times on the same images and
    its fastest trial counts: noise only ever adds time. The finalists are timed again in the rounds, on N."""
    count = min(subject.num, BATCH_SELECTION_IMAGES)
    batches = sorted({b for b in (*BATCH_SIZES, engine_batch) if b <= count} or {count})
    for batch in batches:
        _forwards(subject, batch, batch)()
    trials = Rounds()
    for _ in range(BATCH_SELECTION_TRIALS):
        for batch in batches:
            trials.time(batch, _forwards(subject, count, batch))
    rates = {batch: count / min(trials.samples[batch]) for batch in batches}
    _log(f"{subject.spec.name}: ONNX Runtime images/s by batch size: {_show_rates(rates)}")
    return sorted(rates, key=rates.get, reverse=True)


def choose_perturbations_per_eval(subject: Subject) -> int:
    """Captum's fastest perturbations_per_eval, timed once each on about CAPTUM_SELECTION_WINDOWS windows."""
    side, windows = occlusion_geometry(subject.spec.size, min(subject.num, CAPTUM_SELECTION_WINDOWS))
    choices = [p for p in PERTURBATIONS_PER_EVAL if p <= windows] or [windows]
    _captum(subject, side, choices[-1])()  # warm-up
    trials = Rounds()
    for per_eval in choices:
        trials.time(per_eval, _captum(subject, side, per_eval))
    rates = {per_eval: windows / trials.median(per_eval) for per_eval in choices}
    _log(f"{subject.spec.name}: Captum windows/s by perturbations_per_eval: {_show_rates(rates)}")
    return max(rates, key=rates.get)


def warm_up(subject: Subject, settings: ServerSettings, rise: bool) -> int:
    """First runs pay for allocations and lazy initialisation; a short run of each method keeps that out of
    the timed rounds. Returns the batch size the engine runs this model at."""
    count = min(subject.num, WARM_UP_COUNT)
    if rise:
        for execution in ("host", "graph"):
            run_rise(subject, settings, execution, {"num_masks": count, "seed": 1})
    side, _ = occlusion_geometry(subject.spec.size, count)
    return run_explain(subject, settings, "occlusion", _occlusion_params(side)).cost.batch_size


def occlusion_geometry(size: int, count: int) -> tuple[int, int]:
    """A square window (stride = window) whose number of positions over a size x size image is nearest `count`."""

    def windows(side: int) -> int:
        return (math.ceil((size - side) / side) + 1) ** 2

    side = min(range(1, size + 1), key=lambda s: (abs(windows(s) - count), s))
    return side, windows(side)


def _forwards(subject: Subject, count: int, batch: int) -> Callable[[], None]:
    """Plain forwards of `count` images in batches: inputs built beforehand, so only ONNX Runtime is timed."""
    full = np.ascontiguousarray(np.broadcast_to(subject.image, (batch, *subject.image.shape)))
    sizes = [min(batch, count - start) for start in range(0, count, batch)]
    inputs = [full if n == batch else np.ascontiguousarray(full[:n]) for n in sizes]

    def run() -> None:
        for chunk in inputs:
            subject.model.session.run(chunk)

    return run


def run_explain(subject: Subject, settings: ServerSettings, method: str, params: dict) -> ExplainResult:
    query = ExplainQuery(
        model=subject.spec.name,
        version="",
        images=[ImageInput(tensor=subject.image)],
        method=method,
        parameters=params,
        targets=[TargetQuery(class_index=subject.target)],
    )
    return explain(subject.registry, query, settings, CancelToken())


def run_rise(subject: Subject, settings: ServerSettings, execution: str, params: dict) -> ExplainResult:
    """RISE on the host or in one graph (rise.Rise.execution), whatever the engine's "auto" would pick."""
    method = METHODS["rise"]
    chosen, method.execution = method.execution, execution
    try:
        return run_explain(subject, settings, "rise", params)
    finally:
        method.execution = chosen


def _occlusion_params(side: int) -> dict:
    return {"window": [side, side], "stride": [side, side], "baseline": 0.0}


def _captum(subject: Subject, side: int, per_eval: int) -> Callable[[], np.ndarray]:
    occlusion = Occlusion(subject.module)
    inputs = torch.from_numpy(subject.image)[None]
    channels = subject.image.shape[0]

    def run() -> np.ndarray:
        with torch.inference_mode():
            attribution = occlusion.attribute(
                inputs,
                sliding_window_shapes=(channels, side, side),
                strides=(channels, side, side),
                baselines=0.0,
                target=subject.target,
                perturbations_per_eval=per_eval,
            )
        return attribution[0, 0].numpy()

    return run


def relative_gap(ours: np.ndarray, captum: np.ndarray) -> float:
    """Both sides must compute the same map, or the timing compares different work."""
    scale = max(float(np.abs(captum).max()), 1e-12)
    return float(np.abs(ours - captum).max()) / scale


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _show_rates(rates: dict[int, float]) -> str:
    return ", ".join(f"{key}: {rate:.0f}" for key, rate in rates.items())


COLUMNS = (
    "model",
    "N",
    "windows",
    "batch",
    "engine batch",
    "Captum ppe",
    "a s",
    "b s",
    "b' s",
    "c s",
    "d s",
    "b/a",
    "b'/a",
    "c/a",
    "d/c",
    "occl. vs Captum",
)


def _cells(row: Row) -> list[str]:
    rise_ratio, graph_ratio, occlusion_ratio, captum_ratio = row.ratios()
    return [
        row.model,
        str(row.num),
        str(row.windows),
        str(row.batch),
        str(row.engine_batch),
        str(row.perturbations_per_eval),
        f"{row.forwards:.3f}",
        "n/a" if row.rise is None else f"{row.rise:.3f}",
        "n/a" if row.rise_graph is None else f"{row.rise_graph:.3f}",
        f"{row.occlusion:.3f}",
        f"{row.captum:.3f}",
        "n/a" if rise_ratio is None else f"{rise_ratio:.3f}",
        "n/a" if graph_ratio is None else f"{graph_ratio:.3f}",
        f"{occlusion_ratio:.3f}",
        f"{captum_ratio:.2f}",
        f"{row.occlusion_gap:.1e}",
    ]


if __name__ == "__main__":
    sys.exit(main())
