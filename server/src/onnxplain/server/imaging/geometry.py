"""Where the model's input came from in the original image, so attributions can be drawn back onto it."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Geometry:
    """The resize and center crop that turned an original image into the model input.

    The image was resized from (original_height, original_width) to (resized_height, resized_width), then the box
    (crop_top, crop_left, crop_height, crop_width) of the resized image became the model input.
    """

    original_height: int
    original_width: int
    resized_height: int
    resized_width: int
    crop_top: int
    crop_left: int
    crop_height: int
    crop_width: int

    @classmethod
    def identity(cls, height: int, width: int) -> Geometry:
        """No resize and no crop: the model input is the image itself."""
        return cls(height, width, height, width, 0, 0, height, width)


def map_to_original(attribution: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Return a (original_height, original_width) float32 map from a (crop_height, crop_width) one.

    The map is placed in the resized canvas at the crop box (zero outside it, where the model saw nothing),
    then the canvas is resized to the original size with bilinear interpolation.
    """
    g = geometry
    if attribution.shape != (g.crop_height, g.crop_width):
        raise ValueError(
            f"attribution shape {attribution.shape} does not match the crop size ({g.crop_height}, {g.crop_width})"
        )
    if (
        g.crop_top < 0
        or g.crop_left < 0
        or g.crop_top + g.crop_height > g.resized_height
        or (g.crop_left + g.crop_width > g.resized_width)
    ):
        raise ValueError(f"crop box lies outside the resized image: {g}")
    canvas = np.zeros((g.resized_height, g.resized_width), dtype=np.float32)
    canvas[g.crop_top : g.crop_top + g.crop_height, g.crop_left : g.crop_left + g.crop_width] = attribution
    if (g.resized_height, g.resized_width) == (g.original_height, g.original_width):
        return canvas
    return cv2.resize(canvas, (g.original_width, g.original_height), interpolation=cv2.INTER_LINEAR)
