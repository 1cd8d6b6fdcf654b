"""Max-sensitivity (Yeh et al. 2019), as Captum's captum.metrics.sensitivity_max computes it: how far can the map
move when the image moves a little?

SENS = max over samples delta ~ U[-radius, radius] (each element) of ||phi(x + delta) - phi(x)||_F / ||phi(x)||_F,
per target; a zero norm of phi(x) is replaced by 1, as Captum does. Lower is better.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxplain.server.errors import InvalidInput


def max_sensitivity(
    image: np.ndarray,
    maps: np.ndarray,
    explain: Callable[[np.ndarray], np.ndarray],
    *,
    radius: float,
    samples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(T,) sensitivities of `maps`, the explanation of `image`; `explain(perturbed image)` must return maps of the
    same shape for the same targets (one explanation per sample)."""
    if samples < 1:
        raise InvalidInput(f"samples must be at least 1, got {samples}")
    if radius < 0:
        raise InvalidInput(f"radius must not be negative, got {radius}")
    original = maps.reshape(maps.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(original, axis=1)
    norms[norms == 0] = 1.0
    worst = np.full(maps.shape[0], -np.inf)
    for _ in range(samples):
        noise = rng.uniform(-radius, radius, size=image.shape).astype(image.dtype)
        moved = np.asarray(explain(image + noise))
        if moved.shape != maps.shape:
            raise ValueError(f"the explanation of a perturbed image has shape {moved.shape}, expected {maps.shape}")
        change = np.linalg.norm(moved.reshape(len(moved), -1) - original, axis=1) / norms
        worst = np.maximum(worst, change)
    return worst
