"""The plan lime, kernel_shap and feature_ablation share: score the image with some segments kept and the rest
replaced by a fill, one row of a keep matrix per perturbed input, then let the method's solver turn the scores
into one coefficient per segment and target, spread over that segment's pixels."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.baselines import BASELINE_CHOICES, blurred
from onnxplain.server.methods.parameters import Param, at_least, one_of

# Scores (n, T) of perturbed inputs [0, n) -> (T, M) segment coefficients.
Solver = Callable[[np.ndarray], np.ndarray]
# (start, stop) -> (stop - start, M) bool: which segments perturbed inputs [start, stop) keep.
KeepRows = Callable[[int, int], np.ndarray]

# lime and kernel_shap fit at most this many segments (their sample matrix is num_samples x M).
MAX_FITTED_SEGMENTS = 1000


def fill_param(default: float | str) -> Param:
    return Param(
        "baseline",
        "float_or_str",
        default,
        "what switched-off segments show: a number (in model-input units), 'mean' (each segment's own mean colour, "
        "as lime's hide_color=None) or 'blur' (the image under a Gaussian of sigma = half the typical segment side)",
        one_of(*BASELINE_CHOICES),
    )


def segment_fill(job: ExplainJob, segments: np.ndarray, baseline: float | str) -> np.ndarray:
    """The image a switched-off segment shows, in the job's input shape, float32."""
    image = job.image
    if baseline == "mean":
        return segment_means(image, segments, job.layout)
    if baseline == "blur":
        count = int(segments.max()) + 1
        return blurred(image, job.layout, sigma=max(0.5, math.sqrt(segments.size / count) / 2))
    return np.full_like(image, baseline, dtype=np.float32)


def segment_means(image: np.ndarray, segments: np.ndarray, layout: str) -> np.ndarray:
    """Every pixel replaced by the per-channel mean of its segment."""
    channels_first = image if layout == "NCHW" else np.transpose(image, (2, 0, 1))
    channels = channels_first.shape[0]
    count = int(segments.max()) + 1
    flat = segments.reshape(-1)
    # One bincount for all channels: channel c's segment s lands in bin c * count + s.
    bins = (flat[None, :] + count * np.arange(channels)[:, None]).reshape(-1)
    sums = np.bincount(bins, weights=channels_first.reshape(-1).astype(np.float64), minlength=channels * count)
    means = sums.reshape(channels, count) / np.bincount(flat, minlength=count)[None, :]
    filled = means[:, segments].astype(np.float32)
    return filled if layout == "NCHW" else np.ascontiguousarray(np.transpose(filled, (1, 2, 0)))


class SegmentPlan:
    """A PerturbationPlan: input i keeps the segments where keep_rows(i, i + 1) is True and shows `fill` elsewhere.

    `solve` maps the (n, T) scores of inputs [0, n) to (T, M) segment coefficients. With `refit_partial_at_doubling`
    (for fits that cost more than the passes, such as a ridge over many samples), a partial map is refitted only
    once the scored inputs have doubled since the last one, so streaming costs at most about twice the final fit.
    """

    def __init__(
        self,
        job: ExplainJob,
        segments: np.ndarray,
        fill: np.ndarray,
        count: int,
        keep_rows: KeepRows,
        solve: Solver,
        refit_partial_at_doubling: bool = False,
    ) -> None:
        self.job = job
        self.segments = segments
        self.fill = fill
        self.count = count
        self.keep_rows = keep_rows
        self.solve = solve
        self.refit_partial_at_doubling = refit_partial_at_doubling
        self.scores = np.zeros((count, len(job.scorer.targets)), dtype=np.float64)
        self.done = 0
        self._partial: tuple[int, Attribution] | None = None

    def perturbed(self, start: int, stop: int) -> np.ndarray:
        kept = self.job.spatial_to_input(self.keep_rows(start, stop)[:, self.segments])
        return np.where(kept, self.job.image[None], self.fill[None]).astype(np.float32, copy=False)

    def accumulate(self, start: int, stop: int, scores: np.ndarray) -> None:
        # The template scores batches in order, so rows [0, stop) are the ones scored.
        self.scores[start:stop] = scores
        self.done = stop

    def result(self) -> Attribution:
        final = self.done == self.count
        if not final and self.refit_partial_at_doubling and self._partial is not None:
            fitted_at, attribution = self._partial
            if self.done < 2 * fitted_at:
                return attribution
        coefficients = self.solve(self.scores[: self.done])
        attribution = Attribution(coefficients[:, self.segments].astype(np.float32), self.segments)
        if not final:
            self._partial = (self.done, attribution)
        return attribution


def check_fitted_segments(count: int, method: str, from_client: bool) -> None:
    """A surrogate fit holds an (n, M) sample matrix and solves M x M systems: bound M."""
    if count > MAX_FITTED_SEGMENTS:
        source = "the image's segments have" if from_client else "parameter 'n_segments' gave"
        raise InvalidInput(
            f"{method} fits at most {MAX_FITTED_SEGMENTS} segments; {source} {count}: send coarser segments or "
            "ask for fewer"
        )


SEED_PARAM = Param("seed", "int", 0, "seed of the samples: the same seed gives the same samples and map", at_least(0))
