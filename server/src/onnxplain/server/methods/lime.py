"""LIME over segments (Ribeiro et al. 2016) with lime_image's conventions: the first sample keeps every segment,
the others keep each segment with probability 1/2; samples are weighted by sqrt(exp(-d^2 / w^2)), d the cosine
distance of the keep vector to all-on; a ridge model (alpha 1, with intercept) is fitted to the scores and a
pixel's attribution is the coefficient of its segment. One fit per target, all from the same passes.
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
from onnxplain.server.methods.surrogate import lime_weights, weighted_ridge

RIDGE_ALPHA = 1.0


def lime_samples(num_samples: int, segments: int, seed: int) -> np.ndarray:
    """(num_samples, segments) bool keep matrix: row 0 all on (lime's data[0] = 1), the rest Bernoulli(1/2)."""
    keep = np.random.default_rng(seed).integers(0, 2, size=(num_samples, segments)).astype(bool)
    keep[0] = True
    return keep


@register
class Lime(PerturbationMethod):
    name = "lime"
    description = (
        "Score the image with random subsets of segments kept and the rest filled; attribution = coefficient of "
        "the segment in a locally weighted ridge fit (lime_image)."
    )
    parameters = (
        *SEGMENTATION_PARAMS,
        fill_param("mean"),
        Param(
            "num_samples",
            "int",
            1000,
            "samples including the unaltered image (which costs no extra pass); more than the segments",
            positive,
        ),
        Param("kernel_width", "float", 0.25, "width w of the kernel sqrt(exp(-d^2 / w^2))", positive),
        SEED_PARAM,
    )

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        """Sample 0 (every segment kept) is the image itself, whose scores the job has."""
        return params["num_samples"] - 1

    def plan(self, job: ExplainJob, params: dict[str, Any]) -> SegmentPlan:
        num_samples = params["num_samples"]
        check_pass_limit(job, self.forward_passes(job, params), "num_samples")
        segments = job_segments(job, params)
        count = int(segments.max()) + 1
        check_fitted_segments(count, self.name, job.segments is not None)
        if num_samples <= count:
            raise InvalidInput(
                f"parameter 'num_samples': {num_samples} samples cannot fit {count} segment coefficients and an "
                f"intercept; ask for more than {count} samples or fewer segments"
            )
        keep = lime_samples(num_samples, count, params["seed"])
        original = job.target_scores
        kernel_width = params["kernel_width"]

        def solve(scores: np.ndarray) -> np.ndarray:
            # Sample 0 (all on) is the unaltered image, whose scores the request already has: it costs no pass.
            rows = keep[: len(scores) + 1]
            values = np.concatenate([original[None, :], scores])
            coefficients, _ = weighted_ridge(rows, values, lime_weights(rows, kernel_width), RIDGE_ALPHA)
            return coefficients

        fill = segment_fill(job, segments, params["baseline"])
        scored = keep[1:]
        return SegmentPlan(
            job,
            segments,
            fill,
            len(scored),
            lambda start, stop: scored[start:stop],
            solve,
            refit_partial_at_doubling=True,
        )
