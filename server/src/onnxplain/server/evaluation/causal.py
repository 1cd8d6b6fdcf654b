"""Deletion and insertion games (Petsiuk, Das & Saenko 2018), played as the RISE authors' evaluation code plays
them (eclique/RISE evaluation.py, CausalMetric): a good map names first the pixels that carry the score.

Pixels are taken in the order np.flip(np.argsort(map)) (most salient first, ties as numpy orders them); every step
moves the next `step` pixels, all channels, from a start image to a finish image; n_steps = ceil(H*W / step) and
the curve holds the target's score at each of the n_steps + 1 states. Deletion goes from the image to zeros of the
model-input tensor (for a normalised input: the dataset mean colour); insertion from the blurred image to the image.
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

# The official substrate for insertion: gkern(klen=11, nsig=5), applied with zero padding klen // 2.
KERNEL_SIZE = 11
KERNEL_SIGMA = 5.0


def deletion(
    image: np.ndarray, maps: np.ndarray, layout: str, score: ScoreFn, *, step: int, batch_size: int
) -> np.ndarray:
    """(T, n_steps + 1) scores as the most salient pixels are set to zero; a low curve is a faithful map."""
    return _game(image, np.zeros_like(image), maps, layout, score, step, batch_size)


def insertion(
    image: np.ndarray, maps: np.ndarray, layout: str, score: ScoreFn, *, step: int, batch_size: int
) -> np.ndarray:
    """(T, n_steps + 1) scores as the most salient pixels are restored into the blurred image; a high curve is a
    faithful map."""
    return _game(blur(image, layout), image, maps, layout, score, step, batch_size)


def area_under_curve(curves: np.ndarray) -> np.ndarray:
    """(T,) the official auc: the trapezoid rule over the states, normalised to a unit-wide axis."""
    return (curves.sum(axis=1) - curves[:, 0] / 2 - curves[:, -1] / 2) / (curves.shape[1] - 1)


def blur(image: np.ndarray, layout: str) -> np.ndarray:
    """Each channel convolved with gkern(11, 5) under zero padding, as the official conv2d substrate; the kernel is
    the outer product of one filtered delta, so two 1-D passes give the 2-D convolution."""
    spatial_size(image, layout)
    planes = np.moveaxis(image, 2, 0) if layout == "NHWC" else image
    taps = _gaussian_taps()
    radius = KERNEL_SIZE // 2
    padded = np.pad(planes.astype(np.float64), ((0, 0), (radius, radius), (radius, radius)))
    height, width = planes.shape[1:]
    rows = sum(tap * padded[:, offset : offset + height, :] for offset, tap in enumerate(taps))
    blurred = sum(tap * rows[:, :, offset : offset + width] for offset, tap in enumerate(taps))
    return np.ascontiguousarray(np.moveaxis(blurred, 0, 2) if layout == "NHWC" else blurred, dtype=image.dtype)


def _gaussian_taps() -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d (sigma 5, truncate 4, mode 'reflect') of a centred delta of KERNEL_SIZE."""
    radius = int(4.0 * KERNEL_SIGMA + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * offsets**2 / KERNEL_SIGMA**2)
    delta = np.zeros(KERNEL_SIZE)
    delta[KERNEL_SIZE // 2] = 1.0
    return np.correlate(np.pad(delta, radius, mode="symmetric"), weights / weights.sum(), mode="valid")


def _game(
    start: np.ndarray,
    finish: np.ndarray,
    maps: np.ndarray,
    layout: str,
    score: ScoreFn,
    step: int,
    batch_size: int,
) -> np.ndarray:
    height, width = spatial_size(start, layout)
    check_spatial_maps(maps, (height, width))
    if step < 1:
        raise InvalidInput(f"step must be at least 1 pixel, got {step}")
    pixels, targets = height * width, maps.shape[0]
    states = -(-pixels // step) + 1
    ranks = np.empty((targets, pixels), dtype=np.int64)
    for target, saliency in enumerate(maps):
        ranks[target, np.flip(np.argsort(saliency.reshape(-1)))] = np.arange(pixels)

    def inputs(begin: int, end: int) -> np.ndarray:
        """Rows are (target, state) pairs, target-major: state i has the target's first step * i pixels moved."""
        target, state = np.divmod(np.arange(begin, end), states)
        moved = ranks[target] < (step * state)[:, None]
        return np.where(over_channels(moved.reshape(-1, height, width), layout), finish, start)

    scores = score_in_batches(score, targets * states, batch_size, inputs)
    own_column = np.repeat(np.arange(targets), states)
    return scores[np.arange(targets * states), own_column].reshape(targets, states)
