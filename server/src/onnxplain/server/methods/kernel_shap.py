"""KernelSHAP over segments (Lundberg & Lee 2017): Shapley values of the segments, estimated by a weighted least
squares fit to the scores of coalitions (kept segments; the rest filled) under the exact constraint
sum(phi) = f(x) - f(all off).

Coalitions: when num_samples covers all 2^M - 2 proper coalitions they are all scored once with their Shapley
kernel weights, which gives the exact Shapley values. Otherwise, as Captum samples them, a size k is drawn with
p(k) proportional to (M - 1) / (k (M - k)), then a uniform k-subset (with weight 1, since the draw already follows
the kernel), and each draw is paired with its complement (same weight; paired sampling lowers the variance).
The endpoints are not sampled: f(x) is the request's own pass and f(all off) one extra pass, and they enter as the
constraint, with one variable eliminated as shap does, not as Captum's large endpoint weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import ExplainJob
from onnxplain.server.methods.parameters import Param, positive
from onnxplain.server.methods.perturbation import PerturbationMethod, check_pass_limit
from onnxplain.server.methods.registry import register
from onnxplain.server.methods.segment_perturbation import (
    SEED_PARAM,
    SegmentPlan,
    check_fitted_segments,
    fill_param,
    segment_fill,
)
from onnxplain.server.methods.superpixels import SEGMENTATION_PARAMS, job_segments
from onnxplain.server.methods.surrogate import shapley_kernel, shapley_regression


def shap_coalitions(num_samples: int, segments: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, M) bool keep matrix of proper coalitions and their (n,) regression weights: every coalition with its
    kernel weight when num_samples >= 2^M - 2, else num_samples kernel-distributed draws paired with complements."""
    if 2**segments - 2 <= num_samples:
        codes = np.arange(1, 2**segments - 1)
        keep = ((codes[:, None] >> np.arange(segments)[None, :]) & 1).astype(bool)
        return keep, shapley_kernel(keep.sum(axis=1), segments)
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, segments)
    size_weights = (segments - 1) / (sizes * (segments - sizes))
    pairs = (num_samples + 1) // 2
    drawn = rng.choice(sizes, size=pairs, p=size_weights / size_weights.sum())
    # A uniform k-subset per row: the k smallest of M uniform draws.
    ranks = rng.random((pairs, segments)).argsort(axis=1).argsort(axis=1)
    chosen = ranks < drawn[:, None]
    keep = np.stack([chosen, ~chosen], axis=1).reshape(-1, segments)[:num_samples]
    return keep, np.ones(len(keep))


@register
class KernelShap(PerturbationMethod):
    name = "kernel_shap"
    description = (
        "Shapley values of segments: weighted least squares on the scores of coalitions of kept segments, with "
        "sum(attributions) = f(image) - f(all segments filled)."
    )
    parameters = (
        *SEGMENTATION_PARAMS,
        fill_param("mean"),
        Param(
            "num_samples",
            "int",
            500,
            "coalitions scored besides the image and the all-filled image (one pass each); with 2^M - 2 or more "
            "every coalition is scored once and the values are exact",
            positive,
        ),
        SEED_PARAM,
    )

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        """The all-off image and a coalition per sample, at most (fewer when the segments have fewer coalitions)."""
        return params["num_samples"] + 1

    def plan(self, job: ExplainJob, params: dict[str, Any]) -> SegmentPlan:
        num_samples = params["num_samples"]
        segments = job_segments(job, params)
        count = int(segments.max()) + 1
        check_fitted_segments(count, self.name, job.segments is not None)
        check_pass_limit(job, min(num_samples, 2**count - 2) + 1, "num_samples")
        needed = min(count, 2**count - 2)
        if num_samples < needed:
            raise InvalidInput(
                f"parameter 'num_samples': {num_samples} coalitions cannot determine {count} segment values; "
                f"ask for at least {needed} or fewer segments"
            )
        coalitions, weights = shap_coalitions(num_samples, count, params["seed"])
        # Input 0 is the all-off image; the coalitions follow.
        keep = np.concatenate([np.zeros((1, count), dtype=bool), coalitions])
        original = job.target_scores

        def solve(scores: np.ndarray) -> np.ndarray:
            empty = scores[0]
            scored = len(scores) - 1
            return shapley_regression(coalitions[:scored], scores[1:] - empty, weights[:scored], original - empty)

        fill = segment_fill(job, segments, params["baseline"])
        return SegmentPlan(
            job, segments, fill, len(keep), lambda start, stop: keep[start:stop], solve, refit_partial_at_doubling=True
        )
