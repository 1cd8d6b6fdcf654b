"""The server's engine in this process, and the limit beside it.

Models are written into a temporary repository and loaded as `onnxplain serve` loads them (the same loader, config
and settings); ours is `handlers.explain` called directly, the request path minus gRPC. The limit is the same
passes as plain forwards in a session of its own with the server's session options (threads, denormals flushed,
full optimisation), inputs built beforehand: ONNX Runtime with nothing else around it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import yaml
from common import log, settle
from models import DEMO, DEMO_FOLDER, BenchModel, onnx_file, torch_module
from plan import Plan
from torch import nn

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.providers import choose_providers
from onnxplain.server.engine.session import create_session, session_options
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.schema import ExplainQuery, ExplainResult, ImageInput, TargetQuery
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import Device, ServerSettings

# Each of the plan's batch sizes is timed on whole batches for at least plan.selection_seconds, in a few interleaved
# trials; its fastest trial counts (noise only ever adds time).
BATCH_SELECTION_TRIALS = 3
# Untimed runs before a timed block of one candidate: the other candidate's idle threads stop spinning meanwhile.
SETTLE_SECONDS = 0.2
VERSION = "1"


@dataclass
class Served:
    """A model loaded in this process: the engine's model, the limit's session, the torch module for the peers, and
    the image (normal noise, seeded) with its top class."""

    spec: BenchModel
    module: nn.Module
    model: LoadedModel
    plain: ort.InferenceSession
    image: np.ndarray
    target: int
    batch_sizes: tuple[int, ...]
    selection_seconds: float
    best: int | None = None

    @property
    def label(self) -> str:
        return self.spec.label

    def forwards(self, count: int, batch: int) -> Callable[[], None]:
        """The limit: plain forwards of `count` images in batches of `batch`, inputs built beforehand."""
        full = np.ascontiguousarray(np.broadcast_to(self.image, (batch, *self.image.shape)))
        sizes = [min(batch, count - start) for start in range(0, count, batch)]
        name = self.plain.get_inputs()[0].name
        feeds = [{name: full if n == batch else np.ascontiguousarray(full[:n])} for n in sizes]

        def run() -> None:
            for feed in feeds:
                self.plain.run(None, feed)

        return run

    def best_batch(self) -> int:
        """The fastest batch size for plain forwards (ranked once per model)."""
        if self.best is None:
            for batch in self.batch_sizes:
                self.forwards(batch, batch)()  # first runs allocate
            rates: dict[int, float] = {}
            for _ in range(BATCH_SELECTION_TRIALS):
                for batch in self.batch_sizes:
                    rates[batch] = max(rates.get(batch, 0.0), self._rate(batch))
            log(f"{self.label}: plain forwards, images/s by batch size: {_rates(rates)}")
            self.best = max(rates, key=rates.get)
        return self.best

    def _rate(self, batch: int) -> float:
        """Images per second of batches of `batch`, run for at least BATCH_SELECTION_SECONDS."""
        run, images = self.forwards(batch, batch), 0
        started = time.perf_counter()
        while images == 0 or time.perf_counter() - started < self.selection_seconds:
            run()
            images += batch
        return images / (time.perf_counter() - started)

    def limit(self, passes: int) -> Callable[[], None]:
        """Plain forwards of `passes` images: one at batch 1, more at the best batch size."""
        return self.forwards(passes, 1 if passes == 1 else self.best_batch())

    def settle_limit(self) -> None:
        settle(self.forwards(1, 1), SETTLE_SECONDS)

    def settle_engine(self) -> None:
        settle(lambda: self.model.session.run(self.image[None]), SETTLE_SECONDS)


class Engine:
    """The models of a run, loaded on `device`: the engine and the limit on its ONNX Runtime provider, the peers'
    torch modules on the same device."""

    def __init__(self, repository: Path, threads: int, cache: Path, plan: Plan, device: Device = "cpu") -> None:
        self.threads = threads
        self.cache = cache
        self.plan = plan
        self.settings = ServerSettings(model_repository=repository, device=device, threads=threads)
        self.providers = choose_providers(device)
        self.torch_device = "cuda" if device == "cuda" else "cpu"
        self.registry = ModelRegistry(repository, lambda source: load_model(source, self.settings))
        self._served: dict[BenchModel, Served] = {}
        self._modules: dict[BenchModel, nn.Module] = {}

    def module(self, spec: BenchModel) -> nn.Module:
        if spec not in self._modules:
            self._modules[spec] = torch_module(spec).to(self.torch_device)
        return self._modules[spec]

    def onnx(self, spec: BenchModel) -> Path:
        return onnx_file(spec, self.module(spec), self.cache)

    def serve(self, spec: BenchModel) -> Served:
        """The model loaded in this process (once), with the limit's session and the peers' torch module."""
        if spec not in self._served:
            log(f"{spec.label}: loading")
            path = self.onnx(spec)
            write_model(self.settings.model_repository, spec, path)
            self.registry.load(spec.name)
            model = self.registry.get(spec.name)
            plain = create_session(path, session_options(self.threads), self.providers)
            image = np.random.default_rng(0).normal(size=spec.input_shape).astype(np.float32)
            target = int(np.argmax(model.session.run(image[None])[0]))
            module = self.module(spec)
            plan = self.plan
            self._served[spec] = Served(
                spec, module, model, plain, image, target, plan.batch_sizes, plan.selection_seconds
            )
        return self._served[spec]

    def explain(
        self, served: Served, method: str, params: dict, targets: list[TargetQuery] | None = None
    ) -> ExplainResult:
        """One explain call through the handler, as the servicer makes it; the image's top class by default."""
        query = ExplainQuery(
            model=served.spec.name,
            version="",
            images=[ImageInput(tensor=served.image)],
            method=method,
            parameters=dict(params),
            targets=targets or [TargetQuery(class_index=served.target)],
        )
        return explain(self.registry, query, self.settings, CancelToken())


def write_model(repository: Path, spec: BenchModel, path: Path, name: str = "", config: dict | None = None) -> None:
    """The model as a repository folder: a copy of the file (the server refuses files that link outside their
    folder) and a config.yaml of `config`, over the demo's own config and labels for the demo."""
    folder = repository / (name or spec.name)
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, folder / VERSION / "model.onnx")
    settings = dict(config or {})
    if spec.architecture == DEMO:
        shutil.copyfile(DEMO_FOLDER / "labels.txt", folder / "labels.txt")
        settings = {**yaml.safe_load((DEMO_FOLDER / "config.yaml").read_text()), **settings}
    if settings:
        (folder / "config.yaml").write_text(yaml.safe_dump(settings))


def _rates(rates: dict[int, float]) -> str:
    return ", ".join(f"{key}: {rate:.0f}" for key, rate in rates.items())
