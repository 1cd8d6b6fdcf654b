"""Occlusion (Zeiler & Fergus 2014) with Captum's semantics.

A window slides over the image with the given strides, starting at 0, the last window cut at the border
(ceil((D - w) / s) + 1 positions per axis). Each window replaces every channel under it by the baseline; a pixel's
attribution is the mean, over the windows covering it, of score(original) - score(occluded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.baselines import baseline_image
from onnxplain.server.methods.parameters import Param, one_of, positive
from onnxplain.server.methods.perturbation import PerturbationMethod
from onnxplain.server.methods.registry import register
from onnxplain.server.methods.windows import check_windows, window_positions, window_spans


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

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        return window_positions(job, *self._geometry(job, params))

    def plan(self, job: ExplainJob, params: dict[str, Any]) -> OcclusionPlan:
        window, stride = self._geometry(job, params)
        check_windows(job, window, stride)
        params.update(window=window, stride=stride)
        return OcclusionPlan(job, window, stride, baseline_image(job, params["baseline"], max(window) / 2))

    @staticmethod
    def _geometry(job: ExplainJob, params: Mapping[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
        """The window (default: a seventh of the shorter side) and the stride (default: half the window)."""
        height, width = job.spatial_size
        window = params["window"] or (max(1, min(height, width) // 7),) * 2
        return window, params["stride"] or tuple(max(1, w // 2) for w in window)


class OcclusionPlan:
    """Windows are rectangles: a batch copies the image and overwrites one rectangle per copy, and the score drops
    are added to their rectangles. Work stays proportional to the window area, not to the whole image (on a
    2-core machine the batch builder competes with ONNX Runtime for the same cores)."""

    def __init__(self, job: ExplainJob, window: tuple[int, int], stride: tuple[int, int], baseline: np.ndarray) -> None:
        self.job = job
        height, width = job.spatial_size
        rows = window_spans(height, window[0], stride[0])
        cols = window_spans(width, window[1], stride[1])
        self.window, self.stride, self.columns = window, stride, len(cols)
        self.count = len(rows) * len(cols)
        self.baseline = baseline
        self.original = job.target_scores
        self.total = np.zeros((len(job.scorer.targets), height, width), dtype=np.float64)
        # Windows are products of a row span and a column span, so coverage is an outer product of sums.
        self.coverage = np.outer(rows.sum(axis=0), cols.sum(axis=0)).astype(np.float64)

    def _rectangle(self, index: int) -> tuple[slice, slice]:
        """Rows and columns of window `index` (row-major order of window positions), cut at the border."""
        top = (index // self.columns) * self.stride[0]
        left = (index % self.columns) * self.stride[1]
        return slice(top, top + self.window[0]), slice(left, left + self.window[1])

    def _region(self, rows: slice, cols: slice) -> tuple[slice, ...]:
        """Index of a rectangle across all channels of one input in the model's layout."""
        return (slice(None), rows, cols) if self.job.layout == "NCHW" else (rows, cols, slice(None))

    def perturbed(self, start: int, stop: int) -> np.ndarray:
        batch = np.repeat(self.job.image[None], stop - start, axis=0)
        for offset, index in enumerate(range(start, stop)):
            region = self._region(*self._rectangle(index))
            batch[offset][region] = self.baseline[region]
        return batch

    def accumulate(self, start: int, stop: int, scores: np.ndarray) -> None:
        deltas = (self.original[None, :] - scores).astype(np.float64)
        for offset, index in enumerate(range(start, stop)):
            rows, cols = self._rectangle(index)
            self.total[:, rows, cols] += deltas[offset][:, None, None]

    def result(self) -> Attribution:
        return Attribution((self.total / np.maximum(self.coverage, 1.0)).astype(np.float32))
