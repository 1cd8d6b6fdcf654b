"""The metrics Evaluate offers. Each declares its parameters and its cost (cost.py adds the costs up before any
work) and reads what it needs from a MetricContext; the formulas live in one module per metric family beside this
one."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation._layout import ScoreFn
from onnxplain.server.evaluation.causal import area_under_curve, deletion, insertion
from onnxplain.server.evaluation.faithfulness import faithfulness_correlation
from onnxplain.server.evaluation.infidelity import infidelity
from onnxplain.server.evaluation.localisation import mass_in_region, pointing_game
from onnxplain.server.evaluation.sensitivity import max_sensitivity
from onnxplain.server.methods.base import ScoreSpace
from onnxplain.server.methods.parameters import Param, at_least, at_most, choice, positive

Requirement = Literal["region", "method"]


@dataclass(frozen=True)
class MetricContext:
    """One image and one explainer's maps, with the means to score and re-explain perturbed copies of the image."""

    image: np.ndarray
    layout: str
    # The explainer's maps: (T, H, W), or (T, *image.shape) for input-shaped methods.
    maps: np.ndarray
    # The same maps as (T, H, W), channels summed.
    spatial_maps: np.ndarray
    # A score function for the targets in a score space; the request's space, or None for each metric's own.
    scorer: Callable[[ScoreSpace], ScoreFn]
    space: ScoreSpace | None
    batch_size: int
    # One generator per metric name, the same for every explainer, so all of them face the same perturbations.
    rng: Callable[[str], np.random.Generator]
    # The region as an (H', W') bool mask, and the maps taken into its pixels (the original image's, if encoded).
    region: np.ndarray | None = None
    region_maps: Callable[[], np.ndarray] | None = None
    # Maps of a perturbed image for the same targets, shaped like `maps` (when the explainer is a method).
    explain: Callable[[np.ndarray], np.ndarray] | None = None

    def score(self, default: ScoreSpace) -> ScoreFn:
        return self.scorer(self.space or default)


@dataclass(frozen=True)
class CostShape:
    """What a metric's cost depends on for one image: its (H, W), its number of targets, and the steps of the
    parameter randomisation cascade on the request's model (0 when that metric is not asked for)."""

    size: tuple[int, int]
    targets: int
    cascade_steps: int = 0


@dataclass(frozen=True)
class MetricCost:
    """One metric's cost for one image and explainer: forward passes of its own, and re-runs of the explainer's
    method (each re-run is one scoring pass and one explanation of a changed image or model)."""

    passes: int
    reruns: int = 0


@dataclass(frozen=True)
class MetricOutput:
    """(T,) values, and the (T, n) curves behind them by name."""

    values: np.ndarray
    curves: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    parameters: tuple[Param, ...]
    higher_is_better: bool
    requires: tuple[Requirement, ...]
    # None for metrics computed over all images at once (parameter_randomization, run by the handler).
    compute: Callable[[MetricContext, dict[str, Any]], MetricOutput] | None
    cost: Callable[[CostShape, dict[str, Any]], MetricCost]


SEED = Param("seed", "int", 0, "seed of every random draw: the same seed gives the same perturbations", at_least(0))
STEP = Param(
    "step",
    "int",
    None,
    "pixels moved per deletion/insertion step (default: the input width, as the RISE evaluation's 224 at 224x224)",
    positive,
)
TOLERANCE = Param("tolerance", "int", 15, "pointing game: pixels from the map's maximum that still hit", positive)


def _causal_step(width: int, params: dict[str, Any]) -> int:
    return params["step"] or width


def _causal(curve: Callable[..., np.ndarray], name: str) -> Callable[[MetricContext, dict[str, Any]], MetricOutput]:
    def compute(context: MetricContext, params: dict[str, Any]) -> MetricOutput:
        step = _causal_step(context.spatial_maps.shape[2], params)
        score = context.score("probability")
        curves = curve(
            context.image, context.spatial_maps, context.layout, score, step=step, batch_size=context.batch_size
        )
        return MetricOutput(area_under_curve(curves), {name: curves})

    return compute


def _causal_cost(shape: CostShape, params: dict[str, Any]) -> MetricCost:
    """Every target's curve: one pass per state, the start and one per step."""
    height, width = shape.size
    steps = math.ceil(height * width / _causal_step(width, params))
    return MetricCost((steps + 1) * shape.targets)


def _faithfulness(context: MetricContext, params: dict[str, Any]) -> MetricOutput:
    runs = params["faithfulness_runs"]
    pixels = context.spatial_maps.shape[1] * context.spatial_maps.shape[2]
    if params["subset_size"] >= pixels:
        raise InvalidInput(f"parameter 'subset_size' must be below the image's {pixels} pixels")
    values = faithfulness_correlation(
        context.image,
        context.spatial_maps,
        context.layout,
        context.score("raw"),
        runs=runs,
        subset_size=params["subset_size"],
        baseline=params["baseline"],
        rng=context.rng("faithfulness_correlation"),
        batch_size=context.batch_size,
    )
    return MetricOutput(values)


def _infidelity(context: MetricContext, params: dict[str, Any]) -> MetricOutput:
    samples = params["infidelity_samples"]
    values = infidelity(
        context.image,
        context.maps,
        context.layout,
        context.score("raw"),
        samples=samples,
        noise_std=params["noise_std"],
        rng=context.rng("infidelity"),
        batch_size=context.batch_size,
    )
    return MetricOutput(values)


def _sensitivity(context: MetricContext, params: dict[str, Any]) -> MetricOutput:
    assert context.explain is not None  # the handler checks the "method" requirement
    values = max_sensitivity(
        context.image,
        context.maps,
        context.explain,
        radius=params["radius"],
        samples=params["sensitivity_samples"],
        rng=context.rng("max_sensitivity"),
    )
    return MetricOutput(values)


def _no_cost(shape: CostShape, params: dict[str, Any]) -> MetricCost:
    return MetricCost(0)


def _pointing_game(context: MetricContext, params: dict[str, Any]) -> MetricOutput:
    assert context.region is not None and context.region_maps is not None
    return MetricOutput(pointing_game(context.region_maps(), context.region, tolerance=params["tolerance"]))


def _mass_in_region(context: MetricContext, params: dict[str, Any]) -> MetricOutput:
    assert context.region is not None and context.region_maps is not None
    return MetricOutput(mass_in_region(context.region_maps(), context.region))


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "deletion",
            "RISE deletion AUC: the target's probability as the most important pixels are removed first (set to the "
            "input's zero), trapezoid area over the steps",
            (STEP,),
            False,
            (),
            _causal(deletion, "deletion"),
            _causal_cost,
        ),
        Metric(
            "insertion",
            "RISE insertion AUC: the target's probability as the most important pixels are put back first into a "
            "blurred copy",
            (STEP,),
            True,
            (),
            _causal(insertion, "insertion"),
            _causal_cost,
        ),
        Metric(
            "faithfulness_correlation",
            "Bhatt et al. 2020: Pearson correlation between the attribution of random pixel subsets and the score "
            "drop when they are set to the baseline",
            (
                Param("faithfulness_runs", "int", 100, "random subsets", at_most(10_000)),
                Param("subset_size", "int", 224, "pixels per subset", positive),
                Param(
                    "baseline",
                    "str",
                    "black",
                    "value of removed pixels: black (image minimum), zero or mean",
                    choice("black", "zero", "mean"),
                ),
                SEED,
            ),
            True,
            (),
            _faithfulness,
            lambda shape, params: MetricCost(params["faithfulness_runs"] + 1),  # the same subsets serve every target
        ),
        Metric(
            "infidelity",
            "Yeh et al. 2019 (Captum): mean squared difference between the map's dot product with Gaussian input "
            "noise and the score change that noise causes",
            (
                Param("infidelity_samples", "int", 10, "noise samples", at_most(10_000)),
                Param("noise_std", "float", 0.003, "standard deviation of the noise, in model-input units", positive),
                SEED,
            ),
            False,
            (),
            _infidelity,
            lambda shape, params: MetricCost(params["infidelity_samples"] + 1),  # every target from the same samples
        ),
        Metric(
            "max_sensitivity",
            "Yeh et al. 2019 (Captum): the largest relative change of the map under uniform input noise; each "
            "sample is a full explanation",
            (
                Param("sensitivity_samples", "int", 10, "noise samples (one explanation each)", at_most(1_000)),
                Param("radius", "float", 0.02, "noise bound per input value (L-infinity), model-input units", positive),
                SEED,
            ),
            False,
            ("method",),
            _sensitivity,
            lambda shape, params: MetricCost(0, reruns=params["sensitivity_samples"]),
        ),
        Metric(
            "pointing_game",
            "Zhang et al. 2016 (TorchRay): 1 when the map's maximum lies within `tolerance` pixels of the region",
            (TOLERANCE,),
            True,
            ("region",),
            _pointing_game,
            _no_cost,
        ),
        Metric(
            "mass_in_region",
            "Share of the positive attribution that lies inside the region (relevance mass accuracy)",
            (),
            True,
            ("region",),
            _mass_in_region,
            _no_cost,
        ),
        Metric(
            "parameter_randomization",
            "Adebayo et al. 2018: Spearman rank correlation of |map| between the model and the model with every "
            "layer's weights re-drawn, cascading from the top; the explainer is flagged when it stays above "
            "`sanity_threshold`",
            (
                Param("randomization_steps", "int", 0, "cascade steps; 0: one per weighted layer", at_least(0)),
                Param(
                    "sanity_threshold",
                    "float",
                    0.5,
                    "rank correlation above which the explainer is flagged",
                    at_least(-1),
                ),
                SEED,
            ),
            False,
            ("method",),
            None,
            lambda shape, params: MetricCost(0, reruns=shape.cascade_steps),  # each step explains every image again
        ),
    )
}
DEFAULT_METRICS = ("deletion", "insertion", "faithfulness_correlation", "infidelity")
REGION_METRICS = ("pointing_game", "mass_in_region")


def select_metrics(names: list[str], has_regions: bool) -> list[Metric]:
    """The metrics a request names, or the defaults (with the localisation metrics when regions came along)."""
    if not names:
        names = [*DEFAULT_METRICS, *(REGION_METRICS if has_regions else ())]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise InvalidInput(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    if len(set(names)) != len(names):
        raise InvalidInput(f"metrics are named more than once: {', '.join(names)}")
    selected = [METRICS[name] for name in names]
    missing = [metric.name for metric in selected if "region" in metric.requires and not has_regions]
    if missing:
        raise InvalidInput(f"{', '.join(missing)} need regions: send one box or mask per image")
    return selected


def metric_parameters(metrics: list[Metric]) -> tuple[Param, ...]:
    """The parameters of the selected metrics, each once (seed is shared)."""
    by_name: dict[str, Param] = {}
    for metric in metrics:
        for param in metric.parameters:
            by_name.setdefault(param.name, param)
    return tuple(by_name.values())
