"""Does the map point at the object? The pointing game (Zhang et al. 2016, as TorchRay's benchmark plays it) and
the share of positive attribution inside the object (Arras, Osman & Samek's relevance mass accuracy)."""

from __future__ import annotations

import numpy as np

from onnxplain.server.errors import InvalidInput


def pointing_game(maps: np.ndarray, mask: np.ndarray, *, tolerance: float) -> np.ndarray:
    """(T,) 1.0 when some mask pixel lies strictly closer than `tolerance` pixels to the map's maximum (the first
    in row-major order), 0.0 when none does, nan when the mask is empty."""
    region = _region(maps, mask)
    if tolerance < 0:
        raise InvalidInput(f"tolerance must not be negative, got {tolerance}")
    if not region.any():
        return np.full(maps.shape[0], np.nan)
    point_y, point_x = np.divmod(maps.reshape(maps.shape[0], -1).argmax(axis=1), maps.shape[2])
    mask_y, mask_x = np.nonzero(region)
    distances = (mask_y[None, :] - point_y[:, None]) ** 2 + (mask_x[None, :] - point_x[:, None]) ** 2
    return (distances < tolerance**2).any(axis=1).astype(np.float64)


def mass_in_region(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T,) positive attribution inside the mask / all positive attribution; nan where a map has none."""
    region = _region(maps, mask)
    positive = np.clip(maps.astype(np.float64), 0.0, None)
    total = positive.sum(axis=(1, 2))
    inside = (positive * region).sum(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def _region(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if maps.ndim != 3 or mask.shape != maps.shape[1:]:
        raise InvalidInput(f"expected (targets, H, W) maps and an (H, W) mask, got {maps.shape} and {mask.shape}")
    return np.asarray(mask, dtype=bool)
