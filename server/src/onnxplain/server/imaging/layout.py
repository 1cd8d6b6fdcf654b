"""Where an image's pixels sit in the model's layout: one place for the axis arithmetic every stage needs."""

from __future__ import annotations

import numpy as np


def spatial_size(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """(H, W) of one image shaped (C, H, W) in "NCHW" or (H, W, C) in "NHWC"."""
    return (shape[1], shape[2]) if layout == "NCHW" else (shape[0], shape[1])


def over_channels(masks: np.ndarray, layout: str) -> np.ndarray:
    """(n, H, W) -> a view that broadcasts over (n, *image shape): one value for every channel of a pixel."""
    return masks[:, None, :, :] if layout == "NCHW" else masks[:, :, :, None]


def channel_axis(layout: str) -> int:
    """The channel axis of one image (no batch axis)."""
    return 0 if layout == "NCHW" else 2


def image_shape(channels: int, height: int, width: int, layout: str) -> tuple[int, int, int]:
    """One image's shape in the layout."""
    return (channels, height, width) if layout == "NCHW" else (height, width, channels)
