"""One method on a loaded model, called as Explain calls it (handlers/attribution.py), and what the call found.

The check asks whether a method runs, not for a good map, and a model's whole check must stay short:
- a method of many passes is called with few of them (cheap_parameters);
- a method whose passes grow with the model, not with its parameters (one backward row per class for CLEAR and the
  class-contrast saliencies, one forward per channel for Score-CAM: a thousand on an ImageNet model), is stopped
  after its first batch that ran on graphs already built when it needs more than MAX_PASSES passes. Its graphs were
  built and ran; the maps of a stopped call are not checked, and its time is estimated from that batch.
- a call is timed as a served request on a warm model would be: on graphs already built. A method whose first call
  built a graph (the first of the methods that share it) is called a second time, and that call is timed; unless
  the first needed more than MAX_PASSES passes, beside which building its graphs costs little. Every other
  method's first call is its timed call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.derived import DerivedGraphs
from onnxplain.server.errors import Cancelled
from onnxplain.server.handlers.attribution import resolve_method, run_method
from onnxplain.server.handlers.forward import score_images
from onnxplain.server.handlers.models import MethodSupport
from onnxplain.server.imaging.layout import spatial_size
from onnxplain.server.methods.base import Progress, Scorer
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.settings import ServerSettings

Verdict = Literal["ok", "stopped", "unsupported", "failed"]
# Timed forward passes of the probe image; the fastest is the unit of the methods' times.
FORWARD_REPEATS = 5
# A call that needs more passes than this is stopped after its second batch.
MAX_PASSES = 64


def cheap_parameters(name: str, height: int, width: int) -> dict[str, Any]:
    """Overrides that make a costly method cheap on an image of height x width and still run its whole code path:
    few samples, masks, segments and steps, and windows half the image side (two by two, overlapping nothing)."""
    window = [max(1, height // 2), max(1, width // 2)]
    few_samples = {"samples": 2}
    segments = {"n_segments": 8}
    sampled_segments = {**segments, "num_samples": 16}
    return {
        "feature_ablation": segments,
        "feature_visualization": {"steps": 2},
        "integrated_gradients": {"steps": 4},
        "kernel_shap": sampled_segments,
        "lime": sampled_segments,
        "occlusion": {"window": window, "stride": window},
        "prediction_difference": {"window": window, "stride": window, "num_samples": 2},
        "rise": {"num_masks": 8},
        "smoothgrad": few_samples,
        "smoothgrad_sq": few_samples,
        "vargrad": few_samples,
    }.get(name, {})


@dataclass(frozen=True)
class MethodOutcome:
    name: str
    family: str
    # What model metadata says before any call, and why.
    supported: bool
    reason: str
    verdict: Verdict
    # Why a call failed (empty unless the verdict is "failed").
    failure: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    # The timed call's seconds (estimated for the whole call when it was stopped), and the passes that ran of it.
    seconds: float | None = None
    forward_passes: int = 0
    backward_passes: int = 0
    # For a stopped call: how many of the passes the whole call needs had run.
    stopped_after: int | None = None
    passes_needed: int | None = None


def forward_seconds(model: LoadedModel, image: np.ndarray) -> float:
    """The fastest of a few plain forward passes of `image`, as Explain scores it."""
    times = []
    for _ in range(FORWARD_REPEATS):
        started = time.perf_counter()
        score_images(model, [image])
        times.append(time.perf_counter() - started)
    return min(times)


def try_method(
    model: LoadedModel, support: MethodSupport, image: np.ndarray, scores: np.ndarray, settings: ServerSettings
) -> MethodOutcome:
    """The method's outcome on `image` (whose raw scores are `scores`), explaining its top class."""
    outcome = MethodOutcome(support.name, support.family, support.supported, support.reason, "unsupported")
    if not support.supported:
        return outcome
    overrides = cheap_parameters(support.name, *spatial_size(image.shape, model.signature.layout))
    outcome = replace(outcome, parameters=overrides)
    try:
        builds = model.derived.builds
        first = _call(model, outcome, image, scores, settings)
        built = model.derived.builds != builds
        if not built or first.verdict == "stopped" or first.forward_passes > MAX_PASSES:
            return first
        return _call(model, outcome, image, scores, settings)
    except Exception as error:  # any failure of a method metadata calls supported is what the check reports
        return replace(outcome, verdict="failed", failure=f"{type(error).__name__}: {error}")


def _call(
    model: LoadedModel, outcome: MethodOutcome, image: np.ndarray, scores: np.ndarray, settings: ServerSettings
) -> MethodOutcome:
    """One timed call: verdict "ok" when it ran to the end, "stopped" when _Stopper stopped it."""
    method, params = resolve_method(outcome.name, outcome.parameters, model)
    token = CancelToken()
    scorer = Scorer(model, [int(np.argmax(scores))], "raw", token)
    stopper = _Stopper(token, model.derived)
    try:
        run_method(method, params, image, scores, scorer, settings, progress=stopper)
    except Cancelled:
        if not stopper.stopped:
            raise
    passes = scorer.passes
    outcome = replace(outcome, forward_passes=passes.forward, backward_passes=passes.backward)
    if stopper.stopped:
        done, needed = stopper.passes
        return replace(outcome, verdict="stopped", seconds=stopper.estimate, stopped_after=done, passes_needed=needed)
    return replace(outcome, verdict="ok", seconds=time.perf_counter() - stopper.started)


class _Stopper:
    """A call's progress callback: stops a call of more than MAX_PASSES passes after its first batch that ran on
    graphs already built, and estimates the whole call's time at that batch's pace. A batch runs from the previous
    report (the call's start for the first) to its own; one during which a graph was built is not a pace, so the
    call goes on to its next batch. A method may run phases of passes (Score-CAM reads its layer in one backward
    pass, then scores one masked image per channel): the current phase's batches count, and its passes are the
    whole call's estimate."""

    def __init__(self, token: CancelToken, graphs: DerivedGraphs) -> None:
        self.token = token
        self.started = time.perf_counter()
        self.estimate: float | None = None
        self._graphs = graphs
        self._last: Progress | None = None
        self._since, self._builds = self.started, graphs.builds

    @property
    def stopped(self) -> bool:
        return self.token.cancelled

    @property
    def passes(self) -> tuple[int, int]:
        """Passes done and passes the whole phase needs, as the method last reported them."""
        return self._last.passes_done, self._last.passes_total

    def __call__(self, progress: Progress) -> None:
        now, builds = time.perf_counter(), self._graphs.builds
        same_phase = self._last is not None and self._last.passes_total == progress.passes_total
        batch = progress.passes_done - (self._last.passes_done if same_phase else 0)
        unfinished = progress.passes_done < progress.passes_total
        if builds == self._builds and unfinished and progress.passes_total > MAX_PASSES:
            self.estimate = (now - self._since) / batch * progress.passes_total
            self.token.cancel()
        self._last = progress
        self._since, self._builds = now, builds
