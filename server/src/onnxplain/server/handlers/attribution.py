"""One method on one image: the step Explain and Evaluate share."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxplain.server.engine.batching import batch_size_for, default_max_batch
from onnxplain.server.errors import FailedPrecondition, InternalError, UnsupportedGraph
from onnxplain.server.handlers.forward import score_images
from onnxplain.server.imaging.layout import channel_axis
from onnxplain.server.methods.base import Attribution, AttributionMethod, ExplainJob, ProgressCallback, Scorer
from onnxplain.server.methods.parameters import parse_parameters
from onnxplain.server.methods.registry import get_method
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.settings import ServerSettings


def resolve_method(
    name: str, parameters: dict[str, Any], model: LoadedModel
) -> tuple[AttributionMethod, dict[str, Any]]:
    """The method and its checked parameters, or a clear error when it is unknown or cannot run on the model."""
    method = get_method(name)
    params = parse_parameters(method.parameters, parameters, f"method {method.name!r}")
    method.check_parameters(model, params)
    reason = method.unsupported_reason(model, params)
    if reason:
        raise FailedPrecondition(f"method {method.name!r} cannot run on model {model.name!r}: {reason}")
    return method, params


def run_method(
    method: AttributionMethod,
    params: dict[str, Any],
    tensor: np.ndarray,
    scores: np.ndarray | None,
    scorer: Scorer,
    settings: ServerSettings,
    *,
    segments: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Attribution, np.ndarray]:
    """The method's maps of `tensor` for the scorer's targets, and the image's raw scores: `scores` when given, else
    those the method's own run gave (a forward pass when it gave none). The passes land in the scorer. `params` are
    the checked parameters; the method fills in defaults it derives from the image, so give each image its own
    copy."""
    job = explain_job(tensor, scores, scorer, settings, segments=segments, progress=progress)
    checks = scorer.model.checks
    try:
        attribution = method.attribute(job, params)
    except UnsupportedGraph as error:
        if not params.get("layer"):  # a layer the request named says nothing of the method's default graphs
            checks.record_failure(method.name, str(error))
        raise
    checks.record_run(method.name)
    if scorer.pending_top:
        raise InternalError(f"method {method.name!r} left its top-ranked targets unresolved")
    _check_finite(method, attribution)
    if job.scores is None:
        job.scores = score_images(scorer.model, [tensor], scorer.token, scorer.passes)[0]
    return attribution, job.scores


def explain_job(
    tensor: np.ndarray,
    scores: np.ndarray | None,
    scorer: Scorer,
    settings: ServerSettings,
    *,
    segments: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> ExplainJob:
    """The job a method explains `tensor` in, under the server's batch size and limits: what run_method runs, and
    what a method declares its passes for before any run (AttributionMethod.forward_passes)."""
    return ExplainJob(
        model=scorer.model,
        image=tensor,
        scores=scores,
        scorer=scorer,
        batch_size=batch_size(scorer.model, tensor, settings),
        progress=progress,
        max_forward_passes=settings.limits.max_forward_passes,
        segments=segments,
        partial_interval_s=settings.partial_map_interval_s,
    )


def _check_finite(method: AttributionMethod, attribution: Attribution) -> None:
    """A map with NaN or infinite values is onnxplain's failure, never an answer."""
    for name, values in (("maps", attribution.maps), *attribution.extras.items()):
        values = np.asarray(values)
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise InternalError(f"method {method.name!r} computed {bad} non-finite values of {values.size} ({name})")


def batch_size(model: LoadedModel, tensor: np.ndarray, settings: ServerSettings) -> int:
    """Images per run for perturbed copies of `tensor`, within the batch memory budget and the model's caps."""
    bytes_per_image = int(tensor.nbytes * (1.0 + model.signature.activation_ratio))
    default = default_max_batch(model.session.providers, bytes_per_image)
    max_batch = model.config.max_batch_size or settings.max_batch_size or default
    return batch_size_for(bytes_per_image, settings.batch_memory, max_batch, model.signature.fixed_batch)


def shape_map(attribution: np.ndarray, tensor: np.ndarray, layout: str, shape: str) -> np.ndarray:
    """Spatial (H, W) maps as they are, broadcast over channels when the input shape is asked for; input-shaped maps
    (gradients) as they are, or summed over channels when a spatial map is asked for (the sum keeps completeness:
    an integrated-gradients map still sums to the score change)."""
    if attribution.shape == tensor.shape:
        return attribution if shape == "input" else attribution.sum(axis=channel_axis(layout))
    if shape == "spatial":
        return attribution
    expanded = attribution[None, :, :] if layout == "NCHW" else attribution[:, :, None]
    return np.ascontiguousarray(np.broadcast_to(expanded, tensor.shape))
