"""Regions the localisation metrics measure against, as boolean masks in the pixels the client drew them in."""

from __future__ import annotations

import numpy as np

from onnxplain.server.errors import InvalidInput


def region_mask(
    size: tuple[int, int], box: tuple[int, int, int, int] | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """An (H, W) bool mask from a (top, left, height, width) box, clipped to the image, or from a mask of that size.
    A box that misses the image entirely is refused: it is a client's coordinate mistake, not an empty region."""
    height, width = size
    if mask is not None:
        if mask.shape != size:
            raise InvalidInput(f"region mask shape {list(mask.shape)} does not match the image's {[height, width]}")
        if not np.isfinite(mask).all():
            raise InvalidInput("region mask contains NaN or infinite values")
        return mask != 0
    if box is None:
        raise InvalidInput("a region has neither a box nor a mask")
    top, left, box_height, box_width = box
    if box_height <= 0 or box_width <= 0:
        raise InvalidInput(f"region box height and width must be positive, got {box_height}x{box_width}")
    bottom, right = min(top + box_height, height), min(left + box_width, width)
    top, left = max(top, 0), max(left, 0)
    if top >= bottom or left >= right:
        raise InvalidInput(f"region box {list(box)} (top, left, height, width) lies outside the {height}x{width} image")
    inside = np.zeros(size, dtype=bool)
    inside[top:bottom, left:right] = True
    return inside
