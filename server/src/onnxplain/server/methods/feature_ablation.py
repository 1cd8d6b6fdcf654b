"""Feature ablation over segments with Captum's FeatureAblation semantics (feature_mask = the segments): each
segment in turn is set to the baseline, and every pixel of it gets score(original) - score(ablated). One pass per
segment. Without client segments it ablates SLIC superpixels (or a grid), like lime and kernel_shap, rather than
refusing: Captum's own default of one feature per scalar would cost a pass per pixel and channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxplain.server.methods.base import ExplainJob
from onnxplain.server.methods.perturbation import PerturbationMethod, check_pass_limit
from onnxplain.server.methods.registry import register
from onnxplain.server.methods.segment_perturbation import SegmentPlan, fill_param, segment_fill
from onnxplain.server.methods.superpixels import SEGMENTATION_PARAMS, job_segments


@register
class FeatureAblation(PerturbationMethod):
    name = "feature_ablation"
    description = "Set each segment to the baseline in turn; attribution = score drop, spread over the segment."
    parameters = (*SEGMENTATION_PARAMS, fill_param(0.0))

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        """One pass per segment, which only the segmentation of the image counts."""
        return int(job_segments(job, dict(params)).max()) + 1

    def plan(self, job: ExplainJob, params: dict[str, Any]) -> SegmentPlan:
        segments = job_segments(job, params)
        count = int(segments.max()) + 1
        check_pass_limit(job, count, "n_segments" if job.segments is None else "segments")
        original = job.target_scores

        def ablating(start: int, stop: int) -> np.ndarray:
            # Input j ablates segment j alone; built per batch, as M x M would not fit for fine segments.
            return np.arange(count)[None, :] != np.arange(start, stop)[:, None]

        def solve(scores: np.ndarray) -> np.ndarray:
            # Segments not scored yet (a partial map) stay 0.
            drops = np.zeros((len(original), count), dtype=np.float64)
            drops[:, : len(scores)] = (original[None, :] - scores).T
            return drops

        fill = segment_fill(job, segments, params["baseline"])
        return SegmentPlan(job, segments, fill, count, ablating, solve)
