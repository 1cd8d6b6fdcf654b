"""The base every backward-graph method shares: which backward graph it needs (BackwardSpec) and how rows of
(image, seed) pairs run through it in batches, with pass limits, cancellation, progress and pass counting.

A method lays its work out as rows: integrated gradients has steps x targets rows (scaled images, one-hot seeds),
SmoothGrad samples x targets (noisy images), the multi-class saliency maps one row per class. One ONNX Runtime run
takes a batch of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from onnxplain.server.engine.backward.rulesets.base import GRADIENT, RuleSet
from onnxplain.server.engine.backward.support import INPUT_GRADIENT
from onnxplain.server.engine.gradients import BackwardResult, BackwardSession, BackwardSpec, backward_session
from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import AttributionMethod, ExplainJob, Family, Progress
from onnxplain.server.methods.perturbation import check_pass_limit
from onnxplain.server.observability.names import shortened
from onnxplain.server.repository.model import LoadedModel

# A backward run keeps the forward activations alive for the VJPs: about twice a forward's memory per row.
BACKWARD_MEMORY_FACTOR = 2


class GradientMethod(AttributionMethod):
    family: ClassVar[Family] = "gradient"
    ruleset: ClassVar[RuleSet] = GRADIENT
    # The backward walks the method's graphs need (engine/backward/support.py).
    walks: ClassVar[tuple[str, ...]] = (INPUT_GRADIENT,)

    def unsupported_reason(self, model: LoadedModel, params: Mapping[str, Any] | None = None) -> str | None:
        return model.checks.problem(self.name, self.walks_for(params or {}))

    def walks_for(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The walks a call with these parameters needs."""
        return self.walks

    def check_parameters(self, model: LoadedModel, params: Mapping[str, Any]) -> None:
        layer = params.get("layer")
        if layer and layer not in model.derived.weights.tensor_names:
            raise InvalidInput(
                f"parameter 'layer': model {model.name!r} has no tensor named {shortened(layer)!r} (the name of a "
                "node's output, as Netron shows it)"
            )

    def spec(self, job: ExplainJob, params: dict[str, Any]) -> BackwardSpec:
        """The backward graph this method needs; input gradients with the method's rule set by default."""
        return BackwardSpec(ruleset=self.ruleset, probability=job.scorer.space == "probability")

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        """One backward row per target, and one forward for the image's scores (top-k targets a graph cannot rank,
        or a job started without them)."""
        return job.scorer.target_count + 1


class EveryClassMethod(GradientMethod):
    """A method that takes the gradient of every class of the model (for_every_class)."""

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        return job.num_classes + 1


def session_for(job: ExplainJob, spec: BackwardSpec) -> BackwardSession:
    return backward_session(job.model, job.image.shape, spec, job.scorer.token)


def one_hot(job: ExplainJob, classes: np.ndarray | Sequence[int]) -> np.ndarray:
    """(len(classes), K) seeds asking for one class each."""
    seeds = np.zeros((len(classes), job.num_classes), dtype=np.float32)
    seeds[np.arange(len(classes)), np.asarray(classes)] = 1.0
    return seeds


def run_rows(
    job: ExplainJob,
    session: BackwardSession,
    images: np.ndarray,
    seeds: np.ndarray,
    parameter: str | None = None,
    ranks: np.ndarray | None = None,
) -> BackwardResult:
    """All rows through the backward graph in batches; `images` may be one image for every row (broadcast); `ranks`
    (one per row) add classes picked by rank to the seeds (BackwardSession.run)."""
    count = len(seeds)

    def rows(start: int, stop: int) -> tuple[np.ndarray, ...]:
        shape = (stop - start, *images.shape[1:])
        batch = (images[start:stop] if len(images) == count else np.broadcast_to(images, shape)), seeds[start:stop]
        return batch if ranks is None else (*batch, ranks[start:stop])

    return _concatenated([result for _, _, result in batched_rows(job, session, count, rows, parameter)])


def batched_rows(
    job: ExplainJob,
    session: BackwardSession,
    count: int,
    rows: Callable[[int, int], tuple[np.ndarray, ...]],
    parameter: str | None = None,
) -> Iterator[tuple[int, int, BackwardResult]]:
    """Rows [start, stop) of `count`, built by `rows(start, stop)` as (images, seeds) or (images, seeds, ranks), run
    in batches sized for a backward pass, within the pass limit, counting passes and reporting progress after each
    batch."""
    check_pass_limit(job, count, parameter)
    batch = max(1, job.batch_size // BACKWARD_MEMORY_FACTOR)
    for start in range(0, count, batch):
        stop = min(start + batch, count)
        images, seeds, *ranks = rows(start, stop)
        result = session.run(images, seeds, job.scorer.token, *ranks)
        job.scorer.passes.record_backward(session, stop - start)
        if job.progress is not None:
            job.progress(Progress(stop, count))
        yield start, stop, result


def _concatenated(parts: list[BackwardResult]) -> BackwardResult:
    if len(parts) == 1:
        return parts[0]

    def joined(field: str) -> np.ndarray | None:
        values = [getattr(part, field) for part in parts]
        return None if values[0] is None else np.concatenate(values)

    return BackwardResult(joined("scores"), joined("input_gradient"), joined("layer"), joined("layer_gradient"))


def target_gradients(job: ExplainJob, spec: BackwardSpec) -> BackwardResult:
    """One row per target: the image with a one-hot seed of the target."""
    return target_rows(job, session_for(job, spec))


def target_rows(job: ExplainJob, session: BackwardSession) -> BackwardResult:
    """One row of the unaltered image per target. Top-k targets not ranked yet (explain skips the scoring forward
    for single-pass methods) are picked by rank inside the graph, and read back from the scores it computed; a graph
    that cannot pick by rank gets them from a forward first."""
    scorer = job.scorer
    if scorer.pending_top and not session.takes_ranks:
        job.scores = scorer.model_scores(job.image[None])[0]
        scorer.rank_targets(job.scores)
    if not scorer.pending_top:
        return image_rows(job, session, one_hot(job, scorer.targets))
    ranks = np.arange(scorer.pending_top)
    result = image_rows(job, session, np.zeros((len(ranks), job.num_classes), np.float32), ranks)
    scorer.rank_targets(result.scores[0])
    return result


def image_rows(
    job: ExplainJob, session: BackwardSession, seeds: np.ndarray, ranks: np.ndarray | None = None
) -> BackwardResult:
    """One row of the unaltered image per seed. A job started without the image's scores (explain skips the scoring
    forward for single-pass methods) takes them from these rows when the graph's scores are the model's output."""
    result = run_rows(job, session, job.image[None], seeds, ranks=ranks)
    if job.scores is None and session.scores_are_model_output:
        job.scores = np.asarray(result.scores[0], dtype=np.float32)
    return result


def channel_axis(job: ExplainJob) -> int:
    """The channel axis of (rows, *input shape) arrays."""
    return 1 if job.layout == "NCHW" else 3


def for_every_class(job: ExplainJob, spec: BackwardSpec, consume: Callable[[np.ndarray, BackwardResult], None]) -> None:
    """One backward row per class of the model, in batches: `consume(classes, result)` gets each batch, so a
    1000-class Jacobian (600 MB at 3x224x224) never sits in memory at once."""

    def rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return np.broadcast_to(job.image[None], (stop - start, *job.image.shape)), one_hot(job, range(start, stop))

    for start, stop, result in batched_rows(job, session_for(job, spec), job.num_classes, rows):
        consume(np.arange(start, stop), result)


def input_bounds(job: ExplainJob) -> tuple[float, float]:
    """The range pixels in [0, 1] span after the model's normalisation; the image's own range for raw-tensor models.
    LRP's z-box rule takes them as inputs of its graph, so every image's range runs on one graph."""
    spec = job.model.preprocessing
    if spec is None:
        return float(job.image.min()), float(job.image.max())
    mean, std = np.asarray(spec.mean, dtype=np.float64), np.asarray(spec.std, dtype=np.float64)
    return float(np.min((0.0 - mean) / std)), float(np.max((spec.scale * 255.0 - mean) / std))
