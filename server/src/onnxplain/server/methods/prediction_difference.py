"""Prediction difference analysis (Zintgraf, Cohen, Adel & Welling, ICLR 2017), marginal-sampling variant.

A window slides over the image with occlusion's semantics (starting at 0, the last window cut at the border). For
each position the patch under it is replaced by `num_samples` draws from a Gaussian fitted to this image (per-channel
mean and standard deviation over all its pixels: the paper's *marginal* sampling, not its conditional sampler, which
needs patch statistics from a training set we do not have). p(c | x without the patch) is the mean over the draws of
p(c | x with the patch replaced), always in probability space (softmax of logits). The weight of evidence

    WE = log2 odds(p(c | x)) - log2 odds(p(c | x without the patch)),   odds(p) = p / (1 - p),

is computed on Laplace-corrected probabilities p -> (p N + 1) / (N + K) (K classes, N = `laplace_n`, standing in for
the training-set size), and a pixel's relevance is the mean WE of the windows covering it. Positive relevance is
evidence for the class, negative evidence against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.parameters import Param, at_least, positive
from onnxplain.server.methods.perturbation import PerturbationMethod
from onnxplain.server.methods.registry import register
from onnxplain.server.methods.windows import check_windows, window_positions, window_spans
from onnxplain.server.repository.model import LoadedModel

# The paper's window is 10 pixels on 224x224 ImageNet inputs; the default scales that to the image.
_PAPER_WINDOW_FRACTION = 10 / 224
# The authors' code hard-codes N = 100000 for the Laplace correction (the paper: "the number of training instances").
_DEFAULT_LAPLACE_N = 100_000


@register
class PredictionDifference(PerturbationMethod):
    name = "prediction_difference"
    description = (
        "Prediction difference analysis, marginal sampling: replace each window by samples from a Gaussian fitted "
        "to the image's per-channel pixel statistics; attribution = mean weight of evidence (Laplace-corrected "
        "log2-odds drop of the class probability) of the covering windows."
    )
    parameters = (
        Param(
            "window",
            "pair",
            None,
            "window (height, width) in input pixels; default: the paper's 10 for a 224 image, scaled to the "
            "shorter image side (at least 1)",
            positive,
        ),
        Param(
            "stride",
            "pair",
            None,
            "step (height, width) between windows, at most the window; default: the window (non-overlapping, "
            "about 500 windows whatever the image size)",
            positive,
        ),
        Param("num_samples", "int", 10, "replacement patches drawn per window (forward passes per window)", positive),
        Param("seed", "int", 0, "seed of the replacement-patch sampler: the same seed, the same map", at_least(0)),
        Param(
            "laplace_n",
            "int",
            _DEFAULT_LAPLACE_N,
            "N in the Laplace correction p -> (p N + 1) / (N + K): the training-set size; larger N lets "
            "confident probabilities keep more of their log-odds",
            positive,
        ),
    )

    def unsupported_reason(self, model: LoadedModel, params: Mapping[str, Any] | None = None) -> str | None:
        if model.num_classes is not None and model.num_classes < 2:
            return "the weight of evidence needs a probability over at least two classes"
        return None

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        # The method is defined on probabilities whatever score space the request reports scores in.
        return super().attribute(replace(job, scorer=job.scorer.in_space("probability")), params)

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        return window_positions(job, *self._geometry(job, params)) * params["num_samples"]

    def plan(self, job: ExplainJob, params: dict[str, Any]) -> PredictionDifferencePlan:
        window, stride = self._geometry(job, params)
        check_windows(job, window, stride)
        params.update(window=window, stride=stride)
        sampler = MarginalSampler(job.image, job.layout, window, params["num_samples"], params["seed"])
        return PredictionDifferencePlan(job, window, stride, sampler, params["laplace_n"])

    @staticmethod
    def _geometry(job: ExplainJob, params: Mapping[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
        """The window (default: the paper's fraction of the shorter side) and the stride (default: the window)."""
        height, width = job.spatial_size
        window = params["window"] or (max(1, round(min(height, width) * _PAPER_WINDOW_FRACTION)),) * 2
        return window, params["stride"] or window


class MarginalSampler:
    """Replacement patches from a Gaussian fitted to the image: per-channel mean and (population) std over all
    pixels, channels independent. Each window position has its own generator seeded by (seed, position), so a
    window's samples do not depend on batching or on which other windows are drawn."""

    def __init__(self, image: np.ndarray, layout: str, window: tuple[int, int], num_samples: int, seed: int) -> None:
        self.layout = layout
        self.window = window
        self.num_samples = num_samples
        self.seed = seed
        pixel_axes = (1, 2) if layout == "NCHW" else (0, 1)
        self.mean = image.astype(np.float64).mean(axis=pixel_axes)
        self.std = image.astype(np.float64).std(axis=pixel_axes)

    def patches(self, position: int) -> np.ndarray:
        """(num_samples, *patch) float32 patches for a window position, in the model's layout: (S, C, kh, kw) for
        NCHW, (S, kh, kw, C) for NHWC (the same draws, transposed)."""
        rng = np.random.default_rng([self.seed, position])
        noise = rng.standard_normal((self.num_samples, len(self.mean), *self.window))
        patches = (noise * self.std[:, None, None] + self.mean[:, None, None]).astype(np.float32)
        return patches if self.layout == "NCHW" else np.ascontiguousarray(patches.transpose(0, 2, 3, 1))


class PredictionDifferencePlan:
    """Perturbation i is sample i % S of window position i // S (row-major positions)."""

    def __init__(
        self,
        job: ExplainJob,
        window: tuple[int, int],
        stride: tuple[int, int],
        sampler: MarginalSampler,
        laplace_n: int,
    ) -> None:
        self.job = job
        height, width = job.spatial_size
        self.window = window
        self.rows = window_spans(height, window[0], stride[0])
        self.cols = window_spans(width, window[1], stride[1])
        self.row_starts = np.arange(len(self.rows)) * stride[0]
        self.col_starts = np.arange(len(self.cols)) * stride[1]
        self.positions = len(self.rows) * len(self.cols)
        self.sampler = sampler
        self.num_samples = sampler.num_samples
        self.count = self.positions * self.num_samples
        self.laplace_n = laplace_n
        self.classes = job.scores.shape[-1]
        self.original = self._log_odds(job.target_scores[None, :])[0]
        self.probability_sums = np.zeros((self.positions, len(job.scorer.targets)), dtype=np.float64)
        self.samples_done = np.zeros(self.positions, dtype=np.int64)

    def perturbed(self, start: int, stop: int) -> np.ndarray:
        inputs = np.repeat(self.job.image[None], stop - start, axis=0)
        samples = self.num_samples
        for position in range(start // samples, (stop - 1) // samples + 1):
            first, last = max(start, position * samples), min(stop, (position + 1) * samples)
            patches = self.sampler.patches(position)[first - position * samples : last - position * samples]
            top = self.row_starts[position // len(self.cols)]
            left = self.col_starts[position % len(self.cols)]
            rows, cols = slice(top, top + self.window[0]), slice(left, left + self.window[1])
            # Windows cut at the border take the top-left part of their patch.
            if self.job.layout == "NCHW":
                target = inputs[first - start : last - start, :, rows, cols]
                target[...] = patches[:, :, : target.shape[2], : target.shape[3]]
            else:
                target = inputs[first - start : last - start, rows, cols, :]
                target[...] = patches[:, : target.shape[1], : target.shape[2], :]
        return inputs

    def accumulate(self, start: int, stop: int, scores: np.ndarray) -> None:
        positions = np.arange(start, stop) // self.num_samples
        np.add.at(self.probability_sums, positions, scores.astype(np.float64))
        np.add.at(self.samples_done, positions, 1)

    def result(self) -> Attribution:
        """Mean WE of the covering windows; windows not scored yet (partial results) are left out."""
        height, width = self.job.spatial_size
        seen = self.samples_done > 0
        evidence = np.zeros_like(self.probability_sums)
        without_patch = self.probability_sums[seen] / self.samples_done[seen, None]
        evidence[seen] = self.original[None, :] - self._log_odds(without_patch)
        grid = evidence.reshape(len(self.rows), len(self.cols), -1)
        rows, cols = self.rows.astype(np.float64), self.cols.astype(np.float64)
        total = np.einsum("rct,rh,cw->thw", grid, rows, cols)
        coverage = rows.T @ seen.reshape(len(self.rows), len(self.cols)).astype(np.float64) @ cols
        maps = total / np.maximum(coverage, 1.0)[None]
        return Attribution(maps.astype(np.float32).reshape(-1, height, width))

    def _log_odds(self, probabilities: np.ndarray) -> np.ndarray:
        """log2 odds of Laplace-corrected probabilities, in float64."""
        n, k = self.laplace_n, self.classes
        p = probabilities.astype(np.float64)
        return np.log2(p * n + 1) - np.log2((1 - p) * n + k - 1)
