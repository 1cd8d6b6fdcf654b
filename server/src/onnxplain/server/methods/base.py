"""What every attribution method receives and returns, and the base class they share.

A method sees one image in the model's input layout, the target classes already resolved, and a Scorer that runs
batches through the engine and counts passes. It returns one map per target.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.imaging.layout import over_channels, spatial_size
from onnxplain.server.methods.parameters import Param
from onnxplain.server.repository.model import LoadedModel

Family = Literal["perturbation", "gradient", "cam", "relevance", "visualization"]
ScoreSpace = Literal["raw", "probability"]


@dataclass(frozen=True)
class Progress:
    passes_done: int
    passes_total: int
    # Maps from the passes so far, (T, H, W); None when the method has no meaningful partial result.
    partial_maps: np.ndarray | None = None


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class Attribution:
    """A method's result for one image: (T, H, W) spatial maps, or (T, *input shape) for naturally input-shaped
    methods (gradients); `segments` is the (H, W) int32 segmentation that segment-based methods attributed over."""

    maps: np.ndarray
    segments: np.ndarray | None = None
    # Method-specific results beside the maps, by name: integrated_gradients' convergence_delta (T,), clear's
    # dominant_class and dominant_response (H, W). Sent to the client as they are.
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class RunCounting(Protocol):
    """What a PassCounter asks of a session (model, derived or backward): how it splits images into runs."""

    def runs_for(self, images: int) -> int: ...

    def images_per_run(self, images: int) -> int: ...


@dataclass
class PassCounter:
    """What a request cost, counted as the session really ran it (a fixed-batch model runs in chunks)."""

    forward: int = 0
    backward: int = 0
    runs: int = 0
    batch_size: int = 1

    def record_forward(self, session: RunCounting, images: int) -> None:
        self.forward += images
        self.runs += session.runs_for(images)
        self.batch_size = max(self.batch_size, session.images_per_run(images))

    def record_backward(self, session: RunCounting, images: int) -> None:
        """A forward+backward run over `images` rows."""
        self.record_forward(session, images)
        self.backward += images

    def add(self, other: PassCounter) -> None:
        self.forward += other.forward
        self.backward += other.backward
        self.runs += other.runs
        self.batch_size = max(self.batch_size, other.batch_size)


class Scorer:
    """Runs batches through the model's session and returns the target scores, counting every pass.

    `pending_top` > 0 means the targets are the image's top classes, not ranked yet: a single-pass method ranks
    them in its own run (gradient_base.target_rows) and sets `targets` by `rank_targets`."""

    def __init__(
        self, model: LoadedModel, targets: list[int], space: ScoreSpace, token: CancelToken, pending_top: int = 0
    ) -> None:
        self.model = model
        self.targets = np.asarray(targets, dtype=np.int64)
        self.space = space
        self.token = token
        self.pending_top = pending_top
        self.passes = PassCounter()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(n, T) scores of the targets for a batch of inputs in the model's layout."""
        return self.select(self.model_scores(batch))

    def model_scores(self, batch: np.ndarray) -> np.ndarray:
        """(n, K) raw scores of a batch, one forward pass each."""
        scores = self.model.session.run(batch, self.token)
        self.passes.record_forward(self.model.session, len(batch))
        return scores

    @property
    def target_count(self) -> int:
        """How many classes are explained, ranked yet or not."""
        return self.pending_top or len(self.targets)

    def rank_targets(self, scores: np.ndarray) -> None:
        """Resolve pending top-k targets from one image's (K,) scores (ties: the lower index first)."""
        self.targets = np.argsort(-scores, kind="stable")[: self.pending_top].astype(np.int64)
        self.pending_top = 0

    def in_space(self, space: ScoreSpace) -> Scorer:
        """The same scorer giving scores in another space (a method defined on probabilities whatever the
        request asked), counting its passes into this scorer's counter."""
        scorer = Scorer(self.model, self.targets.tolist(), space, self.token)
        scorer.passes = self.passes
        return scorer

    def select(self, scores: np.ndarray) -> np.ndarray:
        if self.space == "probability":
            scores = self.model.to_probabilities(scores)
        return scores[:, self.targets]


@dataclass
class ExplainJob:
    """One image to explain. `image` is in the model's layout without batch; `scores` are its raw (K,) scores, None
    while a single-pass method is to take them from its own run (handlers/explain.py); `segments` is the client's
    (H, W) integer segment map when the request carried one."""

    model: LoadedModel
    image: np.ndarray
    scores: np.ndarray | None
    scorer: Scorer
    batch_size: int
    progress: ProgressCallback | None = None
    max_forward_passes: int = 0
    segments: np.ndarray | None = None
    # Seconds between the partial maps a stream gets (--partial-map-interval-s).
    partial_interval_s: float = 0.5

    @property
    def num_classes(self) -> int:
        return len(self.scores) if self.scores is not None else self.model.num_classes

    @property
    def target_scores(self) -> np.ndarray:
        """(T,) scores of the targets on the unaltered image, in the request's score space."""
        return self.scorer.select(self.scores[None, :])[0]

    @property
    def layout(self) -> str:
        return self.model.signature.layout

    @property
    def spatial_size(self) -> tuple[int, int]:
        return spatial_size(self.image.shape, self.layout)

    def spatial_to_input(self, masks: np.ndarray) -> np.ndarray:
        """(n, H, W) -> a shape that broadcasts over (n, *input shape) in the model's layout."""
        return over_channels(masks, self.layout)


class AttributionMethod(ABC):
    """Base of every method: a name, a family, declared parameters, and `attribute`."""

    name: ClassVar[str]
    family: ClassVar[Family]
    description: ClassVar[str]
    parameters: ClassVar[tuple[Param, ...]] = ()
    # One forward and one backward pass over the image: its runs share batches with other requests' through the
    # model's scheduler. Methods of many passes take turns per model instead (engine/admission.py).
    single_pass: ClassVar[bool] = False

    def unsupported_reason(self, model: LoadedModel, params: Mapping[str, Any] | None = None) -> str | None:
        """Why this method cannot run on the model (with these parameters, when given), or None when it can."""
        return None

    def check_parameters(self, model: LoadedModel, params: Mapping[str, Any]) -> None:
        """Raise InvalidInput for checked parameters that cannot fit this model (a layer it does not have), before
        any work or graph build; most methods' parameters fit any model."""
        return None

    @abstractmethod
    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        """The most forward passes (a backward run counts as one) `attribute` takes on this job with these checked
        parameters, known before it runs: a request that adds many explanations up (Evaluate) is refused before any
        of them runs. Defaults the method derives from the image are not written into `params` here."""

    @abstractmethod
    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        """Maps for the job's targets. Defaults the method chooses from the image (e.g. a window size) are
        written back into `params`, so the response reports every parameter actually used."""
