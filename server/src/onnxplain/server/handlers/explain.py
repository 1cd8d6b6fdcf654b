"""Explain: resolve model, method, parameters and targets, run the method per image, shape and render maps."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.handlers.attribution import resolve_method, run_method, shape_map
from onnxplain.server.handlers.forward import score_images
from onnxplain.server.handlers.inputs import PreparedImage, prepare_images
from onnxplain.server.handlers.response_size import check_response_size, explain_response_bytes
from onnxplain.server.handlers.schema import (
    Cost,
    ExplainProgress,
    ExplainQuery,
    ExplainResult,
    ImageExplanation,
    RenderQuery,
    TargetMap,
)
from onnxplain.server.handlers.targets import needs_scores, resolve_targets, top_ranked_count
from onnxplain.server.imaging.class_map import render_class_map
from onnxplain.server.imaging.geometry import map_to_original
from onnxplain.server.imaging.layout import channel_axis
from onnxplain.server.imaging.render import check_render_options, render_overlay, segment_borders
from onnxplain.server.methods.base import Attribution, PassCounter, Progress, ProgressCallback, Scorer
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings


def explain(
    registry: ModelRegistry,
    query: ExplainQuery,
    settings: ServerSettings,
    token: CancelToken,
    progress: Callable[[ExplainProgress], None] | None = None,
) -> ExplainResult:
    started = time.perf_counter()
    # The head first: the method's support, the targets and the scores are all the head's.
    model = registry.get(query.model, query.version).head(query.output)
    method, params = resolve_method(query.method, query.parameters, model)
    if query.render is not None:
        render = query.render
        check_render_options(render.colormap, render.clip_percentile, render.alpha, render.polarity)
    prepared = prepare_images(model, query.images, settings.limits, token)
    tensors = [image.tensor for image in prepared]
    passes = PassCounter()
    # A single-pass method runs the image itself in its backward graph, which gives the image's scores too, and
    # ranks its classes for top-k targets: no scoring forward before it (on ResNet-50, a third of a saliency call).
    limit, num_classes = settings.limits.max_targets, model.num_classes
    pending_top, deferred = 0, False
    if method.single_pass and num_classes is not None:
        pending_top = top_ranked_count(query.targets, limit, num_classes) or 0
        deferred = pending_top > 0 or not needs_scores(query.targets)
    base_scores = [None] * len(tensors) if deferred else score_images(model, tensors, token, passes)
    # Every image's targets are checked before any method pass runs.
    targets_per_image = [
        [] if pending_top else resolve_targets(query.targets, scores, model.labels, limit, num_classes or 0)
        for scores in base_scores
    ]
    # Feature visualisation returns synthesized inputs: always input-shaped, never summed over channels.
    map_shape = "input" if method.family == "visualization" else query.attribution_shape
    # The response must fit in one message: refused now, before any method pass, rather than when it is encoded.
    estimate = explain_response_bytes(
        model,
        method,
        params,
        prepared,
        [pending_top or len(targets) for targets in targets_per_image],
        num_classes or max(len(scores) for scores in base_scores),
        input_shaped=map_shape == "input",
        original_maps=query.original_maps,
        rendered=query.render is not None,
    )
    check_response_size(
        estimate,
        settings.limits.max_message_bytes,
        "Explain",
        "ask for fewer images or targets, spatial maps, or no original maps or overlays",
    )
    explanations, used_params = [], []
    for index, (image, scores, targets) in enumerate(zip(prepared, base_scores, targets_per_image, strict=True)):
        scorer = Scorer(model, targets, query.score_space, token, pending_top)
        target_scores = None if scores is None else scorer.select(scores[None, :])[0]
        report = progress and _image_progress(progress, index, model, targets, target_scores, started)
        # A copy per image: defaults a method derives from one image's size must not carry over to the next.
        used_params.append(dict(params))
        attribution, scores = run_method(
            method,
            used_params[-1],
            image.tensor,
            scores,
            scorer,
            settings,
            segments=image.segments,
            progress=report,
        )
        targets = scorer.targets.tolist()
        target_scores = scorer.select(scores[None, :])[0]
        explanations.append(
            _image_explanation(model, image, scores, targets, target_scores, attribution, query, map_shape)
        )
        passes.add(scorer.passes)
    cost = Cost(passes.forward, passes.backward, passes.batch_size, passes.runs, time.perf_counter() - started)
    providers = model.session.providers
    return ExplainResult(model.name, model.version, method.name, explanations, cost, used_params[0], providers)


def _image_progress(
    report: Callable[[ExplainProgress], None],
    image_index: int,
    model: LoadedModel,
    targets: list[int],
    target_scores: np.ndarray | None,
    started: float,
) -> ProgressCallback:
    """Adapt a method's progress for one image to the request-level event the transport streams (partial maps come
    from multi-pass methods, which always have the image's scores first)."""

    def forward(progress: Progress) -> None:
        partial = []
        if progress.partial_maps is not None and target_scores is not None:
            partial = [
                TargetMap(c, model.label_of(c), float(score), partial_map)
                for c, score, partial_map in zip(targets, target_scores, progress.partial_maps, strict=True)
            ]
        elapsed = time.perf_counter() - started
        report(ExplainProgress(image_index, progress.passes_done, progress.passes_total, elapsed, partial))

    return forward


def _image_explanation(
    model: LoadedModel,
    image: PreparedImage,
    scores: np.ndarray,
    targets: list[int],
    target_scores: np.ndarray,
    attribution: Attribution,
    query: ExplainQuery,
    shape: str,
) -> ImageExplanation:
    layout = model.signature.layout
    target_maps = []
    for class_index, target_score, spatial in zip(targets, target_scores, attribution.maps, strict=True):
        shaped = shape_map(spatial, image.tensor, layout, shape)
        overlay = b"" if query.render is None else _overlay(image, spatial, layout, query.render, attribution.segments)
        original = None
        if query.original_maps and image.geometry is not None:
            original = map_to_original(shape_map(spatial, image.tensor, layout, "spatial"), image.geometry)
        label = model.label_of(class_index)
        target_maps.append(TargetMap(class_index, label, float(target_score), shaped, overlay, original))
    renderings = {}
    if query.render is not None and "dominant_class" in attribution.extras:
        renderings["clear"] = _class_rendering(model, image, attribution, query.render)
    extras = attribution.extras
    return ImageExplanation(target_maps, scores, image.geometry, attribution.segments, extras, renderings)


def _class_rendering(model: LoadedModel, image: PreparedImage, attribution: Attribution, render: RenderQuery) -> bytes:
    """CLEAR's picture: dominant class as colour, dominant response as brightness, on the original picture."""

    def to_picture(spatial: np.ndarray) -> np.ndarray:
        return spatial if image.geometry is None else map_to_original(spatial, image.geometry)

    extras = attribution.extras
    return render_class_map(
        image.picture,
        extras["dominant_class"],
        extras["dominant_response"],
        model.labels,
        to_picture,
        render.clip_percentile,
        render.alpha,
    )


def _overlay(
    image: PreparedImage, attribution: np.ndarray, layout: str, render: RenderQuery, segments: np.ndarray | None
) -> bytes:
    """Draw on the original picture: input-shaped maps are reduced over channels (max |.| for the absolute view,
    the signed sum when a sign is to be shown), then the map is taken back through the crop and resize."""
    if attribution.ndim == 3:
        channels = channel_axis(layout)
        signed = render.polarity != "absolute"
        attribution = attribution.sum(axis=channels) if signed else np.abs(attribution).max(axis=channels)
    outline = None if segments is None else segment_borders(segments).astype(np.float32)
    if image.geometry is not None:
        attribution = map_to_original(attribution, image.geometry)
        outline = None if outline is None else map_to_original(outline, image.geometry)
    return render_overlay(
        image.picture,
        attribution,
        render.colormap,
        render.clip_percentile,
        render.alpha,
        render.polarity,
        None if outline is None else outline > 0.5,
    )
