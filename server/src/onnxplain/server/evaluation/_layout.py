"""What the metrics share: where an image's pixels sit in its layout, and scoring inputs in bounded batches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.imaging.layout import spatial_size as image_spatial_size

ScoreFn = Callable[[np.ndarray], np.ndarray]


def spatial_size(image: np.ndarray, layout: str) -> tuple[int, int]:
    """(H, W) of a (C, H, W) "NCHW" or (H, W, C) "NHWC" image."""
    if layout not in ("NCHW", "NHWC"):
        raise InvalidInput(f"unknown layout {layout!r}; expected 'NCHW' or 'NHWC'")
    if image.ndim != 3:
        raise InvalidInput(f"expected one image of 3 dimensions in layout {layout}, got shape {image.shape}")
    return image_spatial_size(image.shape, layout)


def check_spatial_maps(maps: np.ndarray, size: tuple[int, int]) -> None:
    if maps.ndim != 3 or maps.shape[1:] != size:
        raise InvalidInput(f"expected maps of shape (targets, {size[0]}, {size[1]}), got {maps.shape}")


def score_in_batches(
    score: ScoreFn, count: int, batch_size: int, inputs: Callable[[int, int], np.ndarray]
) -> np.ndarray:
    """(count, T) float64 scores of inputs(start, stop) for consecutive ranges of at most `batch_size` rows, built
    one range at a time so that no more than a batch of perturbed images is ever in memory."""
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}")
    batches = [score(inputs(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]
    return np.concatenate(batches).astype(np.float64)
