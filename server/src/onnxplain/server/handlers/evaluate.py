"""Evaluate: take or compute each explainer's maps of every image, then score them with the requested metrics.

Every explainer faces the same images, targets and random perturbations (one generator per metric and image), so
the table compares methods, not draws. The whole request's forward passes are counted once the images are scored
and refused over the limit before any explainer runs (evaluation/cost.py).
"""

from __future__ import annotations

import functools
import tempfile
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation._layout import spatial_size
from onnxplain.server.evaluation.cost import ExplainerCost, check_explainer_count, evaluation_cost
from onnxplain.server.evaluation.metrics import CostShape, Metric, MetricContext, metric_parameters, select_metrics
from onnxplain.server.evaluation.randomization import Cascade, parameter_randomization, plan_cascade
from onnxplain.server.evaluation.regions import region_mask
from onnxplain.server.handlers.attribution import batch_size, explain_job, resolve_method, run_method, shape_map
from onnxplain.server.handlers.forward import score_images
from onnxplain.server.handlers.inputs import PreparedImage, prepare_images
from onnxplain.server.handlers.schema import (
    Cost,
    EvaluateQuery,
    EvaluateResult,
    ExplainerEvaluation,
    ExplainerQuery,
    RegionQuery,
    SanityCheck,
    TargetScores,
)
from onnxplain.server.handlers.targets import resolve_targets
from onnxplain.server.imaging.geometry import map_to_original
from onnxplain.server.methods.base import AttributionMethod, PassCounter, Scorer, ScoreSpace
from onnxplain.server.methods.parameters import parse_parameters
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

SANITY_METRIC = "parameter_randomization"


@dataclass(frozen=True)
class Explainer:
    """An explainer checked against the model: its method (None for client maps only) and parameters."""

    name: str
    method: AttributionMethod | None
    params: dict[str, Any]
    attributions: list[np.ndarray]


@dataclass(frozen=True)
class Inputs:
    """What every explainer is evaluated on: the images, their raw scores, targets and region masks."""

    model: LoadedModel
    images: list[PreparedImage]
    scores: list[np.ndarray]
    targets: list[list[int]]
    regions: list[np.ndarray | None]


def evaluate(
    registry: ModelRegistry, query: EvaluateQuery, settings: ServerSettings, token: CancelToken
) -> EvaluateResult:
    started = time.perf_counter()
    model = registry.get(query.model, query.version).head(query.output)
    metrics = select_metrics(query.metrics, bool(query.regions))
    owner = f"metrics {', '.join(metric.name for metric in metrics)}"
    params = parse_parameters(metric_parameters(metrics), query.parameters, owner)
    if not query.explainers:
        raise InvalidInput("the request names no explainer: give a method or maps to evaluate")
    check_explainer_count(len(query.explainers))
    explainers = [_explainer(index, e, model, metrics, len(query.images)) for index, e in enumerate(query.explainers)]
    names = [explainer.name for explainer in explainers]
    if len(set(names)) != len(names):
        raise InvalidInput(f"explainer names must differ, got {', '.join(names)}")
    images = prepare_images(model, query.images, settings.limits, token)
    passes = PassCounter()
    scores = score_images(model, [image.tensor for image in images], token, passes)
    limit = settings.limits.max_targets
    inputs = Inputs(
        model=model,
        images=images,
        scores=scores,
        targets=[resolve_targets(query.targets, s, model.labels, limit) for s in scores],
        regions=_regions(query.regions, images, model.signature.layout),
    )
    # Every client map is checked, and the whole cost counted, before any explainer runs.
    explainers = [
        replace(e, attributions=[_client_maps(maps, inputs, i) for i, maps in enumerate(e.attributions)])
        for e in explainers
    ]
    randomizes = any(metric.name == SANITY_METRIC for metric in metrics)
    cascade = plan_cascade(model, params["randomization_steps"] or None) if randomizes else None
    _check_cost(explainers, inputs, metrics, params, cascade, settings, token)
    evaluations = []
    for explainer in explainers:
        evaluation, counter = _evaluate_explainer(
            explainer, inputs, metrics, params, query.score_space, settings, token, cascade
        )
        evaluations.append(evaluation)
        passes.add(counter)
    cost = Cost(passes.forward, passes.backward, passes.batch_size, passes.runs, time.perf_counter() - started)
    metric_names = [metric.name for metric in metrics]
    return EvaluateResult(model.name, model.version, metric_names, evaluations, params, cost)


def _explainer(index: int, query: ExplainerQuery, model: LoadedModel, metrics: list[Metric], images: int) -> Explainer:
    name = query.name or query.method
    where = f"explainer {name or index}"
    if not query.method and not query.attributions:
        raise InvalidInput(f"{where} has neither a method nor maps")
    if query.attributions and len(query.attributions) != images:
        raise InvalidInput(f"{where} has {len(query.attributions)} maps for {images} images: send one per image")
    needs_method = [metric.name for metric in metrics if "method" in metric.requires]
    if not query.method:
        if needs_method:
            raise InvalidInput(f"{', '.join(needs_method)} re-run the method: {where} has maps but no method")
        return Explainer(name, None, {}, list(query.attributions))
    method, params = resolve_method(query.method, query.parameters, model)
    if method.family == "visualization":
        raise InvalidInput(f"{method.name} synthesises inputs instead of attributing one: there is no map to evaluate")
    return Explainer(name, method, params, list(query.attributions))


def _check_cost(
    explainers: list[Explainer],
    inputs: Inputs,
    metrics: list[Metric],
    params: dict[str, Any],
    cascade: Cascade | None,
    settings: ServerSettings,
    token: CancelToken,
) -> None:
    """Refuse the request when all it would run is over the forward-pass limit; each method declares its passes on
    the job it would explain each image in."""
    layout = inputs.model.signature.layout
    steps = len(cascade.groups) if cascade else 0
    images = list(zip(inputs.images, inputs.scores, inputs.targets, strict=True))
    shapes = [CostShape(spatial_size(image.tensor, layout), len(targets), steps) for image, _, targets in images]

    def method_passes(explainer: Explainer, image: PreparedImage, scores: np.ndarray, targets: list[int]) -> int:
        if explainer.method is None:
            return 0
        job = explain_job(image.tensor, scores, Scorer(inputs.model, targets, "raw", token), settings)
        return explainer.method.forward_passes(job, explainer.params)

    costs = [
        ExplainerCost([method_passes(e, *image) for image in images], explains=not e.attributions) for e in explainers
    ]
    evaluation_cost(costs, shapes, metrics, params).check(settings.limits.max_forward_passes)


def _regions(regions: list[RegionQuery], images: list[PreparedImage], layout: str) -> list[np.ndarray | None]:
    """One mask per image in the pixels the client sees: the original image when it was encoded."""
    if not regions:
        return [None] * len(images)
    if len(regions) != len(images):
        raise InvalidInput(f"{len(regions)} regions for {len(images)} images: send one per image")
    masks = []
    for index, (region, image) in enumerate(zip(regions, images, strict=True)):
        geometry = image.geometry
        size = (geometry.original_height, geometry.original_width) if geometry else spatial_size(image.tensor, layout)
        try:
            masks.append(region_mask(size, region.box, region.mask))
        except InvalidInput as error:
            raise InvalidInput(f"image {index}: {error}") from error
    return masks


def _client_maps(maps: np.ndarray, inputs: Inputs, index: int) -> np.ndarray:
    """A client's maps for one image as (T, H, W) float32, checked against its targets and size."""
    targets = len(inputs.targets[index])
    size = spatial_size(inputs.images[index].tensor, inputs.model.signature.layout)
    shaped = maps[None] if maps.ndim == 2 and targets == 1 else maps
    if shaped.shape != (targets, *size):
        raise InvalidInput(
            f"image {index}: maps of shape {list(maps.shape)} do not match its {targets} target(s) at "
            f"{size[0]}x{size[1]}: send ({targets}, {size[0]}, {size[1]})"
        )
    if not np.isfinite(shaped).all():
        raise InvalidInput(f"image {index}: maps contain NaN or infinite values")
    return shaped.astype(np.float32)


def _evaluate_explainer(
    explainer: Explainer,
    inputs: Inputs,
    metrics: list[Metric],
    params: dict[str, Any],
    space: ScoreSpace | None,
    settings: ServerSettings,
    token: CancelToken,
    cascade: Cascade | None,
) -> tuple[ExplainerEvaluation, PassCounter]:
    started = time.perf_counter()
    counter = PassCounter()
    model = inputs.model
    method_params: dict[str, Any] = {}
    all_maps, per_image = [], []
    for index, (image, scores, targets) in enumerate(zip(inputs.images, inputs.scores, inputs.targets, strict=True)):
        scorer = Scorer(model, targets, "raw", token)
        scorer.passes = counter
        if explainer.attributions:
            maps = explainer.attributions[index]
        else:
            method_params = dict(explainer.params)
            maps = _explain(explainer, method_params, image.tensor, scores, scorer, settings)
        all_maps.append(maps)
        context = _context(explainer, inputs, index, maps, scorer, space, params, settings)
        outputs = {metric.name: metric.compute(context, params) for metric in metrics if metric.compute}
        per_image.append(
            [
                TargetScores(
                    class_index=class_index,
                    label=model.label_of(class_index),
                    values={name: float(output.values[t]) for name, output in outputs.items()},
                    curves={curve: values[t] for output in outputs.values() for curve, values in output.curves.items()},
                )
                for t, class_index in enumerate(targets)
            ]
        )
    sanity = None
    if cascade is not None:
        sanity = _sanity_check(explainer, inputs, all_maps, per_image, cascade, params, settings, token, counter)
    means = {metric.name: _mean(per_image, metric.name) for metric in metrics}
    cost = Cost(counter.forward, counter.backward, counter.batch_size, counter.runs, time.perf_counter() - started)
    method_name = explainer.method.name if explainer.method else ""
    return ExplainerEvaluation(explainer.name, method_name, method_params, per_image, means, sanity, cost), counter


def _explain(
    explainer: Explainer,
    params: dict[str, Any],
    tensor: np.ndarray,
    scores: np.ndarray,
    scorer: Scorer,
    settings: ServerSettings,
) -> np.ndarray:
    assert explainer.method is not None
    attribution, _ = run_method(explainer.method, params, tensor, scores, scorer, settings)
    return attribution.maps


def _explain_unscored(explainer: Explainer, tensor: np.ndarray, scorer: Scorer, settings: ServerSettings) -> np.ndarray:
    """The method's maps of an input the request has not scored (a noisy copy, or the image on a randomised model):
    one forward pass for its scores, counted, then the method with the explainer's own parameters."""
    (scores,) = score_images(scorer.model, [tensor], scorer.token, scorer.passes)
    return _explain(explainer, dict(explainer.params), tensor, scores, scorer, settings)


def _context(
    explainer: Explainer,
    inputs: Inputs,
    index: int,
    maps: np.ndarray,
    scorer: Scorer,
    space: ScoreSpace | None,
    params: dict[str, Any],
    settings: ServerSettings,
) -> MetricContext:
    image = inputs.images[index]
    layout = inputs.model.signature.layout
    spatial = np.stack([shape_map(m, image.tensor, layout, "spatial") for m in maps])
    seed = params.get("seed", 0)

    def rng(metric: str) -> np.random.Generator:
        return np.random.default_rng([seed, index, zlib.crc32(metric.encode())])

    @functools.cache  # pointing_game and mass_in_region share it
    def region_maps() -> np.ndarray:
        if image.geometry is None:
            return spatial
        return np.stack([map_to_original(m, image.geometry) for m in spatial])

    def explain(perturbed: np.ndarray) -> np.ndarray:
        return _explain_unscored(explainer, perturbed, scorer, settings)

    return MetricContext(
        image=image.tensor,
        layout=layout,
        maps=maps,
        spatial_maps=spatial,
        scorer=scorer.in_space,
        space=space,
        batch_size=batch_size(inputs.model, image.tensor, settings),
        rng=rng,
        region=inputs.regions[index],
        region_maps=region_maps if inputs.regions[index] is not None else None,
        explain=explain if explainer.method is not None else None,
    )


def _sanity_check(
    explainer: Explainer,
    inputs: Inputs,
    maps: list[np.ndarray],
    per_image: list[list[TargetScores]],
    cascade: Cascade,
    params: dict[str, Any],
    settings: ServerSettings,
    token: CancelToken,
    counter: PassCounter,
) -> SanityCheck:
    """One cascade for all images: each randomised model is built once and explains every image. Each target's
    value is its rank correlation after the last step, its curve the correlation after every step."""

    def explain_on(randomized: LoadedModel) -> list[np.ndarray]:
        rows = []
        for image, targets in zip(inputs.images, inputs.targets, strict=True):
            scorer = Scorer(randomized, targets, "raw", token)
            scorer.passes = counter
            rows.extend(_explain_unscored(explainer, image.tensor, scorer, settings))
        return rows

    rows = [row for image_maps in maps for row in image_maps]
    with tempfile.TemporaryDirectory(prefix="onnxplain-randomized-") as workdir:
        result = parameter_randomization(
            inputs.model, cascade, rows, explain_on, seed=params["seed"], workdir=Path(workdir)
        )
    correlations = result.correlations  # (steps, all targets of all images)
    row = 0
    for targets in per_image:
        for target in targets:
            target.values[SANITY_METRIC] = float(correlations[-1, row])
            target.curves[SANITY_METRIC] = correlations[:, row].astype(np.float32)
            row += 1
    means = [_nanmean(step) for step in correlations]
    threshold = params["sanity_threshold"]
    return SanityCheck(result.layers, means, bool(means[-1] >= threshold), threshold)


def _mean(per_image: list[list[TargetScores]], metric: str) -> float:
    return _nanmean(np.array([target.values[metric] for targets in per_image for target in targets]))


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
