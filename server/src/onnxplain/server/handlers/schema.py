"""The values handlers take and return; api/convert.py maps them to and from protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from onnxplain.server.imaging.geometry import Geometry
from onnxplain.server.methods.base import ScoreSpace

AttributionShape = Literal["spatial", "input"]


@dataclass(frozen=True)
class ImageInput:
    """Exactly one of: encoded image bytes, or a decoded float32 tensor without the batch dimension."""

    encoded: bytes | None = None
    tensor: np.ndarray | None = None
    # Integer (H, W) segment ids at model-input resolution, for segment-based methods.
    segments: np.ndarray | None = None


@dataclass(frozen=True)
class TargetQuery:
    """Exactly one field is set."""

    class_index: int | None = None
    label: str | None = None
    top_k: int | None = None


@dataclass(frozen=True)
class RenderQuery:
    colormap: str = "jet"
    clip_percentile: float = 99.5
    alpha: float = 0.5
    # absolute | positive | negative | both (diverging green/red)
    polarity: str = "absolute"


@dataclass(frozen=True)
class PredictQuery:
    model: str
    version: str
    images: list[ImageInput]
    top_k: int = 5
    # The output (head) to score; "" is the model's default.
    output: str = ""


@dataclass(frozen=True)
class ExplainQuery:
    model: str
    version: str
    images: list[ImageInput]
    method: str
    parameters: dict[str, Any] = field(default_factory=dict)
    targets: list[TargetQuery] = field(default_factory=list)
    attribution_shape: AttributionShape = "spatial"
    score_space: ScoreSpace = "raw"
    render: RenderQuery | None = None
    # Also give each map over the whole original image (encoded images).
    original_maps: bool = False
    # The output (head) to explain; "" is the model's default.
    output: str = ""


@dataclass(frozen=True)
class ClassScore:
    class_index: int
    label: str
    score: float
    probability: float


@dataclass(frozen=True)
class ImagePrediction:
    scores: np.ndarray
    top: list[ClassScore]


@dataclass(frozen=True)
class PredictResult:
    model: str
    version: str
    predictions: list[ImagePrediction]


@dataclass(frozen=True)
class TargetMap:
    class_index: int
    label: str
    score: float
    attribution: np.ndarray
    overlay_png: bytes = b""
    # (original height, original width), when asked for and the image was encoded.
    original_attribution: np.ndarray | None = None


@dataclass(frozen=True)
class ImageExplanation:
    attributions: list[TargetMap]
    scores: np.ndarray
    geometry: Geometry | None
    segments: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    renderings: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Cost:
    forward_passes: int
    backward_passes: int
    batch_size: int
    runs: int
    elapsed_seconds: float


@dataclass(frozen=True)
class ExplainResult:
    model: str
    version: str
    method: str
    explanations: list[ImageExplanation]
    cost: Cost
    parameters: dict[str, Any]
    providers: list[str]


@dataclass(frozen=True)
class ExplainProgress:
    """Streamed while a method runs: pass counts for one image, and partial maps when the method has them."""

    image_index: int
    passes_done: int
    passes_total: int
    elapsed_seconds: float
    partial: list[TargetMap] = field(default_factory=list)


@dataclass(frozen=True)
class RegionQuery:
    """Exactly one of: a (top, left, height, width) box, or an (H, W) mask (nonzero inside)."""

    box: tuple[int, int, int, int] | None = None
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class ExplainerQuery:
    """A method to run, or maps the client has (one per image), or both (the method then only re-explains)."""

    name: str
    method: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    attributions: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class EvaluateQuery:
    model: str
    version: str
    images: list[ImageInput]
    explainers: list[ExplainerQuery]
    targets: list[TargetQuery] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    regions: list[RegionQuery] = field(default_factory=list)
    # None: each metric's own convention.
    score_space: ScoreSpace | None = None
    # The output head evaluated; "" is the model's default.
    output: str = ""


@dataclass(frozen=True)
class TargetScores:
    class_index: int
    label: str
    values: dict[str, float]
    curves: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class SanityCheck:
    layers: list[str]
    rank_correlations: list[float]
    flagged: bool
    threshold: float


@dataclass(frozen=True)
class ExplainerEvaluation:
    name: str
    method: str
    parameters: dict[str, Any]
    # Per image, per target.
    images: list[list[TargetScores]]
    means: dict[str, float]
    sanity: SanityCheck | None
    cost: Cost


@dataclass(frozen=True)
class EvaluateResult:
    model: str
    version: str
    metrics: list[str]
    explainers: list[ExplainerEvaluation]
    parameters: dict[str, Any]
    cost: Cost
