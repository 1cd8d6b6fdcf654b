"""RISE (Petsiuk, Das & Saenko 2018): score the image under many random soft masks; a pixel's saliency is the
score-weighted average of the masks that keep it.

Perturbed input x * M + fill * (1 - M), M broadcast over channels. Normalisations:
- keep_prob (the paper, the official code): S = sum_i f(x_i) M_i / (N p), N the masks scored so far;
- mask_sum (Xplique): S = sum_i f(x_i) M_i / sum_i M_i per pixel, the empirical E[M] (0 where no mask kept it),
  which corrects the uneven coverage of shifted masks near the borders.
Every target comes from the same passes. Two executions give the same maps: on the host (masks and blend in numpy,
a helper thread one batch ahead) or in one derived ONNX graph per batch (rise_graph.py); `Rise.execution` picks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxplain.server.engine.products import matrix_product
from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.baselines import BASELINE_CHOICES, baseline_image
from onnxplain.server.methods.parameters import Param, at_least, choice, one_of, positive
from onnxplain.server.methods.perturbation import PerturbationMethod, check_pass_limit
from onnxplain.server.methods.registry import register
from onnxplain.server.methods.rise_graph import Execution, RiseGraph, runs_in_graph
from onnxplain.server.methods.rise_masks import cell_sizes, draw_grids, rise_masks

NORMALIZATIONS = ("keep_prob", "mask_sum")
# Scored masks gather until they hold this many bytes, then one matrix product adds them to the sums. A product per
# batch of 16 rewrote the whole (targets x pixels) sum each time: with every class of a 1000-class head at 224x224,
# 112 ms per batch against 53 ms for the batch's forward (2 cores, one BLAS thread); one product over 160 masks
# costs about as much per mask as the arithmetic itself. The product runs on ONNX Runtime's threads
# (engine/products.py): every class of a MobileNetV3 at 128 masks took 631-671 ms a call against 1390-1473 in
# numpy (whose transposed float32 scores also took a slow BLAS path: 412 against 172 ms for the product alone).
FOLD_BYTES = 32 * 1024 * 1024


def _open_unit_interval(value: Any) -> str | None:
    return None if 0.0 < value < 1.0 else f"must be strictly between 0 and 1, got {value!r}"


@register
class Rise(PerturbationMethod):
    name = "rise"
    description = "Score the image under random upsampled binary masks; attribution = score-weighted mean of the masks."
    parameters = (
        Param("num_masks", "int", 4000, "number of random masks (one forward pass each)", positive),
        Param("grid_size", "int", 7, "cells per side of the binary grid a mask is upsampled from", at_least(2)),
        Param("keep_prob", "float", 0.5, "probability that a grid cell keeps the image", _open_unit_interval),
        Param("seed", "int", 0, "seed of the masks: the same seed gives the same masks and map", at_least(0)),
        Param(
            "normalization",
            "str",
            "keep_prob",
            "'keep_prob': divide by num_masks * keep_prob (the paper); 'mask_sum': divide each pixel by the sum of "
            "its mask values (Xplique)",
            choice(*NORMALIZATIONS),
        ),
        Param(
            "fill",
            "float_or_str",
            0.0,
            "value masked-out pixels blend to (in model-input units), or 'mean' (the image's per-channel mean) or "
            "'blur' (the image blurred with a Gaussian of sigma = half a grid cell)",
            one_of(*BASELINE_CHOICES),
        ),
    )
    # "host", "graph", or "auto": the faster of the two on this provider (rise_graph.runs_in_graph).
    execution: Execution = "auto"

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        return params["num_masks"]

    def plan(self, job: ExplainJob, params: dict[str, Any]) -> RisePlan:
        height, width = job.spatial_size
        num_masks, grid_size = params["num_masks"], params["grid_size"]
        check_pass_limit(job, num_masks, "num_masks")
        if grid_size > min(height, width):
            raise InvalidInput(f"parameter 'grid_size': {grid_size} cells is more than the image {height}x{width}")
        fill = baseline_image(job, params["fill"], blur_sigma=max(cell_sizes((height, width), grid_size)) / 2)
        plan = RiseGraphPlan if runs_in_graph(job, self.execution) else RisePlan
        return plan(job, num_masks, grid_size, params["keep_prob"], params["seed"], params["normalization"], fill)


class RisePlan:
    def __init__(
        self,
        job: ExplainJob,
        count: int,
        grid_size: int,
        keep_prob: float,
        seed: int,
        normalization: str,
        fill: np.ndarray,
    ) -> None:
        self.job = job
        self.count = count
        self.grid_size = grid_size
        self.keep_prob = keep_prob
        self.seed = seed
        self.normalization = normalization
        self.fill = fill
        self.difference = (job.image - fill).astype(np.float32)
        height, width = job.spatial_size
        # (targets, H * W) score-weighted mask sums, from the first scored batch on. float32 like the products added
        # to it: 25 folds of 4000 masks drift by about 25 float32 roundings, while a float64 sum of every class of a
        # 1000-class head doubled the memory (400 MB) and the time of each addition.
        self.weighted: np.ndarray | None = None
        self.mask_total = np.zeros(height * width, dtype=np.float64)
        self.scored = 0
        # Masks perturbed() drew, by batch start, until accumulate() takes them: drawn once, not twice.
        self._drawn: dict[int, np.ndarray] = {}
        # Scored masks (n, H * W) and their scores (n, T) not yet added to the sums (FOLD_BYTES).
        self._unfolded: list[tuple[np.ndarray, np.ndarray]] = []
        self._unfolded_bytes = 0
        # The final maps, divided in place of the sums: asked again, they are returned, not divided twice.
        self._final: Attribution | None = None

    def _masks(self, start: int, stop: int) -> np.ndarray:
        return rise_masks(self.seed, start, stop, self.job.spatial_size, self.grid_size, self.keep_prob)

    def perturbed(self, start: int, stop: int) -> np.ndarray:
        masks = self._masks(start, stop)
        self._drawn[start] = masks
        # fill + M * (x - fill) == x * M + fill * (1 - M), with one batch-sized allocation.
        inputs = np.multiply(self.job.spatial_to_input(masks), self.difference[None])
        inputs += self.fill[None]
        return inputs

    def accumulate(self, start: int, stop: int, scores: np.ndarray) -> None:
        masks = self._drawn.pop(start).reshape(stop - start, -1)
        self._unfolded.append((masks, scores))
        self._unfolded_bytes += masks.nbytes
        self.scored += stop - start
        if self._unfolded_bytes >= FOLD_BYTES:
            self._fold()

    def _fold(self) -> None:
        """Add the unfolded masks to the sums."""
        if not self._unfolded:
            return
        masks = np.concatenate([masks for masks, _ in self._unfolded])
        scores = np.concatenate([scores for _, scores in self._unfolded])
        self._unfolded, self._unfolded_bytes = [], 0
        self._add_to_sums(matrix_product(scores.T, masks, self.job.model.threads))
        self.mask_total += masks.sum(axis=0, dtype=np.float64)

    def _add_to_sums(self, weighted: np.ndarray) -> None:
        """The first addition takes the array as the sums: with every class of a 1000-class head, adding it to zeros
        wrote 200 MB of fresh pages and read 400 MB for nothing."""
        if self.weighted is None:
            self.weighted = weighted.astype(np.float32, copy=False)
        else:
            self.weighted += weighted

    def result(self) -> Attribution:
        if self._final is not None:
            return self._final
        self._fold()
        height, width = self.job.spatial_size
        sums = self.weighted
        if sums is None:
            sums = np.zeros((len(self.job.scorer.targets), height * width), dtype=np.float32)
        # Partial maps (streams) are new arrays, since the sums still grow; the final maps are divided in place, as a
        # new array cost 200 MB of fresh pages for every class of a 1000-class head.
        final = self.scored == self.count
        maps = sums if final else np.zeros_like(sums)
        if self.normalization == "mask_sum":
            kept = self.mask_total > 0
            np.divide(sums, self.mask_total, out=maps, where=kept, casting="same_kind")
            maps[:, ~kept] = 0.0
        else:
            np.divide(sums, max(self.scored, 1) * self.keep_prob, out=maps, casting="same_kind")
        attribution = Attribution(maps.reshape(-1, height, width))
        if final:
            self._final, self.weighted = attribution, None
        return attribution


class RiseGraphPlan(RisePlan):
    """The same masks and sums, each batch blended, scored and accumulated in one run of the derived RISE graph."""

    def __init__(self, job: ExplainJob, *args: Any) -> None:
        super().__init__(job, *args)
        self.graph = RiseGraph(job, self.grid_size, self.fill, probability=job.scorer.space == "probability")

    def perturbed(self, start: int, stop: int) -> dict[str, np.ndarray]:
        size = self.job.spatial_size
        grids, shifts = draw_grids(
            self.seed, start, stop, self.grid_size, self.keep_prob, cell_sizes(size, self.grid_size)
        )
        return self.graph.feed(grids, shifts)

    def score(self, start: int, stop: int, prepared: dict[str, np.ndarray]) -> None:
        weighted, mask_sum = self.graph.run(prepared)
        self._add_to_sums(weighted)
        self.mask_total += mask_sum
        self.scored += stop - start
