"""The metrics Evaluate offers. Each declares its parameters and reads what it needs from a MetricContext; the
formulas live in one module per metric family beside this one."""

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
    max_forward_passes: int = 0

    def score(self, default: ScoreSpace) -> ScoreFn:
        return self.scorer(self.space or default)

    def check_passes(self, passes: int, cause: str) -> None:
        if self.max_forward_passes and passes > self.max_forward_passes:
            raise InvalidInput(f"{cause} needs {passes} forward passes; the server allows {self.max_forward_passes}")


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


SEED = Param("seed", "int", 0, "seed of every random draw: the same seed gives the same perturbations", at_least(0))
STEP = Param(
    "step",
    "int",
    None,
    "pixels moved per deletion/insertion step (default: the input width, as the RISE evaluation's 224 at 224x224)",
    positive,
)
TOLERANCE = Param("tolerance", "int", 15, "pointing game: pixels from the map's maximum that still hit", positive)


def _causal(curve: Callable[..., np.ndarray], name: str) -> Callable[[MetricContext, dict[str, Any]], MetricOutput]:
    def compute(context: MetricContext, params: dict[str, Any]) -> MetricOutput:
        height, width = context.spatial_maps.shape[1:]
        step = params["step"] or width
        steps = math.ceil(height * width / step)
        context.check_passes((steps + 1) * len(context.spatial_maps), f"{name} with step {step}")
        score = context.score("probability")
        curves = curve(
            context.image, context.spatial_maps, context.layout, score, step=step, batch_size=context.batch_size
        )
        return MetricOutput(area_under_curve(curves), {name: curves})

    return compute


def _faithfulness(context: MetricContext, params: dict[str, Any]) -> MetricOutput:
    runs = params["faithfulness_runs"]
    context.check_passes(runs + 1, f"faithfulness_correlation with {runs} runs")
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
    context.check_passes(samples + 1, f"infidelity with {samples} samples")
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
        ),
        Metric(
            "insertion",
            "RISE insertion AUC: the target's probability as the most important pixels are put back first into a "
            "blurred copy",
            (STEP,),
            True,
            (),
            _causal(insertion, "insertion"),
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
        ),
        Metric(
            "pointing_game",
            "Zhang et al. 2016 (TorchRay): 1 when the map's maximum lies within `tolerance` pixels of the region",
            (TOLERANCE,),
            True,
            ("region",),
            _pointing_game,
        ),
        Metric(
            "mass_in_region",
            "Share of the positive attribution that lies inside the region (relevance mass accuracy)",
            (),
            True,
            ("region",),
            _mass_in_region,
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
