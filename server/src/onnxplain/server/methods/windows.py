"""Sliding-window geometry shared by occlusion and prediction difference (Captum's conventions)."""

from __future__ import annotations

import math

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import ExplainJob


def check_windows(job: ExplainJob, window: tuple[int, int], stride: tuple[int, int]) -> None:
    """Windows must fit the image and strides must not skip pixels (stride <= window), as Captum asserts."""
    height, width = job.spatial_size
    if window[0] > height or window[1] > width:
        raise InvalidInput(f"parameter 'window': {window[0]}x{window[1]} is larger than the image {height}x{width}")
    if stride[0] > window[0] or stride[1] > window[1]:
        raise InvalidInput(
            f"parameter 'stride': {stride[0]}x{stride[1]} is larger than the window {window[0]}x{window[1]}"
        )


def window_positions(job: ExplainJob, window: tuple[int, int], stride: tuple[int, int]) -> int:
    """How many window positions cover the image (0 when the window does not fit: check_windows refuses it)."""
    height, width = job.spatial_size
    if window[0] > height or window[1] > width:
        return 0
    return (math.ceil((height - window[0]) / stride[0]) + 1) * (math.ceil((width - window[1]) / stride[1]) + 1)


def window_spans(size: int, window: int, stride: int) -> np.ndarray:
    """(positions, size) bool: which pixels each window position covers along one axis."""
    positions = math.ceil((size - window) / stride) + 1
    starts = np.arange(positions)[:, None] * stride
    pixels = np.arange(size)[None, :]
    return (pixels >= starts) & (pixels < starts + window)
