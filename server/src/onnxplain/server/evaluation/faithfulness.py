"""Faithfulness correlation (Bhatt, Weller & Moura 2020), as Quantus' FaithfulnessCorrelation computes it: remove
random pixel subsets and check that the attribution they hold predicts the score they cost.

For `runs` random subsets S of `subset_size` pixels (all channels of each), x~ is the image with S set to the
baseline value; the result is Pearson(sum_{i in S} a_i, f(x) - f(x~)) over the runs, in [-1, 1], higher is better.
"""

from __future__ import annotations

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation._layout import (
    ScoreFn,
    check_spatial_maps,
    score_in_batches,
    spatial_size,
)
from onnxplain.server.imaging.layout import over_channels

# Quantus' names: "black" is the image's minimum (black after any normalisation), not 0.
BASELINES = ("black", "zero", "mean")


def faithfulness_correlation(
    image: np.ndarray,
    maps: np.ndarray,
    layout: str,
    score: ScoreFn,
    *,
    runs: int,
    subset_size: int,
    baseline: str,
    rng: np.random.Generator,
    batch_size: int,
) -> np.ndarray:
    """(T,) correlations; nan for a target whose attribution sums or score changes do not vary. The same subsets
    serve every target, so all targets cost runs + 1 forward passes together."""
    height, width = spatial_size(image, layout)
    check_spatial_maps(maps, (height, width))
    pixels = height * width
    if runs < 2:
        raise InvalidInput(f"runs must be at least 2 to correlate, got {runs}")
    if not 1 <= subset_size <= pixels:
        raise InvalidInput(f"subset_size must be between 1 and the {pixels} pixels of the image, got {subset_size}")
    fill = _baseline_value(image, baseline)
    subsets = np.stack([rng.choice(pixels, subset_size, replace=False) for _ in range(runs)])

    def inputs(start: int, stop: int) -> np.ndarray:
        """Row 0 is the image itself, row r the image without subset r - 1."""
        rows = np.arange(start, stop)
        removed = np.zeros((rows.size, pixels), dtype=bool)
        perturbed = np.flatnonzero(rows > 0)
        removed[perturbed[:, None], subsets[rows[perturbed] - 1]] = True
        masks = over_channels(removed.reshape(-1, height, width), layout)
        return np.where(masks, np.asarray(fill, dtype=image.dtype), image)

    scores = score_in_batches(score, runs + 1, batch_size, inputs)
    score_drops = (scores[0] - scores[1:]).T
    attribution_sums = maps.reshape(maps.shape[0], -1).astype(np.float64)[:, subsets].sum(axis=2)
    return _pearson(attribution_sums, score_drops)


def _baseline_value(image: np.ndarray, baseline: str) -> float:
    if baseline == "black":
        return float(image.min())
    if baseline == "zero":
        return 0.0
    if baseline == "mean":
        return float(image.mean())
    raise InvalidInput(f"unknown baseline {baseline!r}; expected one of {', '.join(BASELINES)}")


def _pearson(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of two (T, n) arrays; nan where a row is constant."""
    first = first - first.mean(axis=1, keepdims=True)
    second = second - second.mean(axis=1, keepdims=True)
    denominator = np.sqrt((first**2).sum(axis=1) * (second**2).sum(axis=1))
    constant = (np.ptp(first, axis=1) == 0) | (np.ptp(second, axis=1) == 0) | (denominator == 0)
    return np.where(constant, np.nan, (first * second).sum(axis=1) / np.where(constant, 1.0, denominator))
