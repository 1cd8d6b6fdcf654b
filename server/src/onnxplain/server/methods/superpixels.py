"""The segments that lime, kernel_shap and feature_ablation switch on and off: the client's own segment map when the
request carries one, otherwise SLIC superpixels or a regular grid computed on the model input.

SLIC is OpenCV's (cv2.ximgproc, from opencv-contrib-python-headless), SLICO variant: it adapts its compactness per
superpixel, so it needs no colour-scale tuning across models whose inputs are normalised differently.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from onnxplain.server.methods.base import ExplainJob
from onnxplain.server.methods.parameters import Param, at_least, choice

SEGMENTATIONS = ("slic", "grid")
# Reported as the segmentation used when the request carried its own segments.
CLIENT_SEGMENTATION = "client"
_SLIC_ITERATIONS = 10
# Segments smaller than this percentage of the nominal superpixel area are merged into a neighbour.
_SLIC_MIN_SEGMENT_PERCENT = 25


SEGMENTATION_PARAMS = (
    Param(
        "segmentation",
        "str",
        "slic",
        "how the image is cut into segments when the request carries none: 'slic' superpixels or a regular 'grid'; "
        "segments sent with the image are used instead",
        choice(*SEGMENTATIONS),
    ),
    Param("n_segments", "int", 50, "about how many segments SLIC or the grid makes", at_least(2)),
)


def job_segments(job: ExplainJob, params: dict[str, Any]) -> np.ndarray:
    """(H, W) int32 segment ids 0..M-1: the client's map relabelled, else the requested segmentation.

    A client map's ids are renumbered in increasing order (ids 3, 7, 9 become 0, 1, 2), so every id has pixels."""
    if job.segments is not None:
        params["segmentation"] = CLIENT_SEGMENTATION
        return relabelled(job.segments)
    height, width = job.spatial_size
    if params["segmentation"] == "grid":
        return grid_segments(height, width, params["n_segments"])
    return slic_segments(displayable(job.image, job.layout), params["n_segments"])


def relabelled(segments: np.ndarray) -> np.ndarray:
    """The same regions numbered 0..M-1 in the order of their original ids."""
    _, inverse = np.unique(segments, return_inverse=True)
    return inverse.reshape(segments.shape).astype(np.int32)


def grid_segments(height: int, width: int, n_segments: int) -> np.ndarray:
    """A regular grid of about n_segments cells shaped like the image (never more cells than pixels per axis)."""
    rows = min(height, max(1, round(math.sqrt(n_segments * height / width))))
    cols = min(width, max(1, round(n_segments / rows)))
    row_ids = np.arange(height) * rows // height
    col_ids = np.arange(width) * cols // width
    return (row_ids[:, None] * cols + col_ids[None, :]).astype(np.int32)


def slic_segments(picture: np.ndarray, n_segments: int) -> np.ndarray:
    """SLICO superpixels of an (H, W, C) uint8 picture, about n_segments of them, relabelled 0..M-1."""
    height, width = picture.shape[:2]
    # OpenCV's SLIC crashes the process (SIGSEGV) when region_size reaches twice the shorter side; capping it at
    # the shorter side keeps it well clear (fuzzed over 9000 random sizes and contents).
    region = round(math.sqrt(height * width / n_segments))
    region = max(1, min(max(2, region), height, width))
    slic = cv2.ximgproc.createSuperpixelSLIC(
        np.ascontiguousarray(picture), algorithm=cv2.ximgproc.SLICO, region_size=region
    )
    slic.iterate(_SLIC_ITERATIONS)
    slic.enforceLabelConnectivity(_SLIC_MIN_SEGMENT_PERCENT)
    return relabelled(slic.getLabels())


def displayable(image: np.ndarray, layout: str) -> np.ndarray:
    """(H, W, C) uint8 with each channel min-max scaled to 0..255, so SLIC sees contrast whatever the model's
    normalisation; a constant channel becomes 0."""
    hwc = np.transpose(image, (1, 2, 0)) if layout == "NCHW" else image
    values = hwc.astype(np.float64)
    low = values.min(axis=(0, 1), keepdims=True)
    span = values.max(axis=(0, 1), keepdims=True) - low
    scaled = np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)
    return np.round(scaled * 255.0).astype(np.uint8)
