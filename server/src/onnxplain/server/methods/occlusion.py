"""Occlusion (Zeiler & Fergus 2014) with Captum's semantics.

A window slides over the image with the given strides, starting at 0, the last window cut at the border
(ceil((D - w) / s) + 1 positions per axis). Each window replaces every channel under it by the baseline; a pixel's
attribution is the mean, over the windows covering it, of score(original) - score(occluded).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.baselines import baseline_image
from onnxplain.server.methods.parameters import Param, one_of, positive
from onnxplain.server.methods.perturbation import PerturbationMethod
from onnxplain.server.methods.registry import register
from onnxplain.server.methods.windows import check_windows, window_spans


@register
class Occlusion(PerturbationMethod):
    name = "occlusion"
    description = "Slide a window of baseline values over the image; attribution = mean score drop of covering windows."
    parameters = (
        Param(
            "window",
            "pair",
            None,
            "window (height, width) in input pixels; default: a seventh of the image side",
            positive,
        ),
        Param(
            "stride",
            "pair",
            None,
            "step (height, width) between windows, at most the window; default: half the window",
            positive,
        ),
        Param(
            "baseline",
            "float_or_str",
            0.0,
            "value occluded pixels take (in model-input units), or 'mean' (the image's per-channel mean) or 'blur' "
            "(the image blurred with a Gaussian of sigma = window / 2)",
            one_of("mean", "blur"),
        ),
    )

    def plan(self, job: ExplainJob, params: dict[str, Any]) -> OcclusionPlan:
        height, width = job.spatial_size
        window = params["window"] or (max(1, min(height, width) // 7),) * 2
        stride = params["stride"] or tuple(max(1, w // 2) for w in window)
        check_windows(job, window, stride)
        params.update(window=window, stride=stride)
        return OcclusionPlan(job, window, stride, baseline_image(job, params["baseline"], max(window) / 2))


class OcclusionPlan:
    def __init__(self, job: ExplainJob, window: tuple[int, int], stride: tuple[int, int], baseline: np.ndarray) -> None:
        self.job = job
        height, width = job.spatial_size
        self.rows = window_spans(height, window[0], stride[0])
        self.cols = window_spans(width, window[1], stride[1])
        self.count = len(self.rows) * len(self.cols)
        self.baseline = baseline
        self.original = job.target_scores
        self.total = np.zeros((len(job.scorer.targets), height * width), dtype=np.float64)
        # Windows are products of a row span and a column span, so coverage is an outer product of sums.
        self.coverage = np.outer(self.rows.sum(axis=0), self.cols.sum(axis=0)).reshape(-1).astype(np.float64)

    def _masks(self, start: int, stop: int) -> np.ndarray:
        """(n, H, W) float32 masks, 1 under windows start..stop-1 (row-major order of window positions)."""
        index = np.arange(start, stop)
        rows = self.rows[index // len(self.cols)]
        cols = self.cols[index % len(self.cols)]
        return (rows[:, :, None] & cols[:, None, :]).astype(np.float32)

    def perturbed(self, start: int, stop: int) -> np.ndarray:
        masks = self.job.spatial_to_input(self._masks(start, stop))
        image = self.job.image[None]
        return image + masks * (self.baseline[None] - image)

    def accumulate(self, start: int, stop: int, scores: np.ndarray) -> None:
        deltas = self.original[None, :] - scores
        masks = self._masks(start, stop).reshape(stop - start, -1)
        self.total += deltas.T.astype(np.float64) @ masks

    def result(self) -> Attribution:
        height, width = self.job.spatial_size
        covered = np.maximum(self.coverage, 1.0)
        return Attribution((self.total / covered).astype(np.float32).reshape(-1, height, width))
