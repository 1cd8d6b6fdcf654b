"""What predict and explain return: plain dataclasses holding numpy arrays, no protobuf in sight."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxplain.client.parameters import ParameterValue


@dataclass(frozen=True)
class ClassScore:
    class_index: int
    label: str
    score: float
    """The model's raw output for the class."""
    probability: float
    """Softmax of logits, or the score itself for probability models."""


@dataclass(frozen=True, eq=False)
class Prediction:
    scores: np.ndarray
    """Raw output scores, shape (K,)."""
    top: list[ClassScore]
    """The top-k classes, best first."""

    @property
    def class_index(self) -> int:
        return self.top[0].class_index

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def probability(self) -> float:
        return self.top[0].probability

    def __repr__(self) -> str:
        if not self.top:
            return f"Prediction(top=[], scores={_describe(self.scores)})"
        return (
            f"Prediction(label={self.label!r}, class_index={self.class_index}, "
            f"probability={self.probability:.4f}, top={len(self.top)}, scores={_describe(self.scores)})"
        )


@dataclass(frozen=True)
class Cost:
    """What a request cost, in the unit every method is measured in: model passes."""

    forward_passes: int
    backward_passes: int
    batch_size: int
    """Images per ONNX Runtime run."""
    runs: int
    elapsed_seconds: float


@dataclass(frozen=True)
class Geometry:
    """Where the model-input map lies in the original image, to draw it over the original yourself."""

    original_height: int
    original_width: int
    resized_height: int
    """Size after resize, before the center crop."""
    resized_width: int
    crop_top: int
    """Crop box in the resized image."""
    crop_left: int
    crop_height: int
    crop_width: int


@dataclass(frozen=True, eq=False)
class Explanation:
    """The attribution maps of one image.

    `attribution` is (H, W) for a single target (None, an int or a label) and (T, H, W) for a list of targets or
    TopK, even of one; with attribution_shape="input" the map part is the model's input shape instead of (H, W).
    `cost`, `parameters` and `providers` describe the whole request, shared by every image sent in it.
    """

    attribution: np.ndarray
    targets: list[int]
    """Class index of each target, in the order of the target axis."""
    labels: list[str]
    target_scores: list[float]
    """Score of each target on the unaltered image, in the request's score space."""
    scores: np.ndarray
    """Raw output scores of the unaltered image, shape (K,)."""
    method: str
    model: str
    version: str
    cost: Cost
    parameters: dict[str, ParameterValue | None]
    """Every parameter the method used, defaults filled in."""
    geometry: Geometry | None
    """None for images sent as tensors."""
    overlays: list[bytes] = field(default_factory=list)
    """PNG overlays, one per target, when the request asked for them."""
    providers: list[str] = field(default_factory=list)
    segments: np.ndarray | None = None
    """(H, W) int32 segment ids 0..M-1 the maps were computed over (segment-based methods), else None."""
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """Method-specific results: integrated_gradients' "convergence_delta" (T,), clear's "dominant_class" and
    "dominant_response" (H, W)."""
    renderings: dict[str, bytes] = field(default_factory=dict)
    """PNG pictures of image-level results when overlays were asked for: clear's "clear" class map with a legend."""
    original_attribution: np.ndarray | None = None
    """With original_maps=True and an encoded image: the maps over the whole original image, (H0, W0) or
    (T, H0, W0) like `attribution`, the crop and resize undone (zero where the crop cut the image away)."""

    def __repr__(self) -> str:
        return (
            f"Explanation(method={self.method!r}, model={self.model!r}, version={self.version!r}, "
            f"targets={self.targets}, labels={self.labels}, attribution={_describe(self.attribution)}, "
            f"overlays={len(self.overlays)}, cost={self.cost})"
        )


@dataclass(frozen=True)
class Progress:
    passes_done: int
    passes_total: int
    elapsed_seconds: float

    @property
    def fraction(self) -> float:
        """0..1; 0 while the total is not known yet."""
        return self.passes_done / self.passes_total if self.passes_total else 0.0


@dataclass(frozen=True, eq=False)
class PartialMap:
    """A map of one image and one target built from the passes done so far (streaming only)."""

    image_index: int
    class_index: int
    label: str
    score: float
    attribution: np.ndarray
    overlay: bytes
    progress: Progress | None

    def __repr__(self) -> str:
        return (
            f"PartialMap(image_index={self.image_index}, class_index={self.class_index}, label={self.label!r}, "
            f"attribution={_describe(self.attribution)}, progress={self.progress})"
        )


def _describe(array: np.ndarray) -> str:
    return f"{array.dtype}{tuple(array.shape)}"


@dataclass(frozen=True)
class TargetScores:
    """One image's metric values for one target."""

    class_index: int
    label: str
    values: dict[str, float]
    """Metric values by name; NaN where undefined (pointing_game against an empty region)."""
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    """"deletion"/"insertion": the score after each step; "parameter_randomization": the rank correlation after
    each cascade step."""


@dataclass(frozen=True)
class SanityCheck:
    """Model-parameter randomisation: the layers randomised, top-down, and the mean rank correlation of the maps to
    the original ones after each step; flagged when the fully randomised model's maps still correlate above the
    threshold (the maps do not show what the model learned)."""

    layers: list[str]
    rank_correlations: list[float]
    flagged: bool
    threshold: float


@dataclass(frozen=True)
class ExplainerScores:
    name: str
    method: str
    """Empty for maps the client sent."""
    parameters: dict[str, ParameterValue | None]
    images: list[list[TargetScores]]
    """Per image, per target."""
    means: dict[str, float]
    """Mean over images and targets per metric, NaN values left out."""
    sanity: SanityCheck | None
    cost: Cost


@dataclass(frozen=True)
class Evaluation:
    """Metric values of several explainers on the same images: `table[explainer][metric]` is the mean."""

    model: str
    version: str
    metrics: list[str]
    explainers: list[ExplainerScores]
    parameters: dict[str, ParameterValue | None]
    """Every metric parameter used, defaults filled in."""
    cost: Cost

    @property
    def table(self) -> dict[str, dict[str, float]]:
        return {explainer.name: {m: explainer.means[m] for m in self.metrics} for explainer in self.explainers}

    def __getitem__(self, name: str) -> ExplainerScores:
        for explainer in self.explainers:
            if explainer.name == name:
                return explainer
        raise KeyError(f"no explainer named {name!r}; have {', '.join(e.name for e in self.explainers)}")
