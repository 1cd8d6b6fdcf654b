"""Infidelity (Yeh et al. 2019), as Captum's captum.metrics.infidelity computes it (normalize=False): does the map,
read as a linear model, predict how the score responds to small noise?

INFD = mean over samples I ~ N(0, noise_std^2) of (sum_i a_i I_i - (f(x) - f(x - I)))^2; lower is better.
"""

from __future__ import annotations

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation._layout import ScoreFn, score_in_batches, spatial_size
from onnxplain.server.imaging.layout import over_channels


def infidelity(
    image: np.ndarray,
    maps: np.ndarray,
    layout: str,
    score: ScoreFn,
    *,
    samples: int,
    noise_std: float,
    rng: np.random.Generator,
    batch_size: int,
) -> np.ndarray:
    """(T,) infidelity of (T, H, W) maps (one value for every channel of a pixel) or input-shaped (T, *image shape)
    maps. Every target is scored from the same samples + 1 forward passes."""
    attribution = _input_shaped(image, maps, layout).reshape(maps.shape[0], image.size).astype(np.float64)
    if samples < 1:
        raise InvalidInput(f"samples must be at least 1, got {samples}")
    if noise_std < 0:
        raise InvalidInput(f"noise_std must not be negative, got {noise_std}")
    predicted = np.empty((samples, maps.shape[0]))

    def inputs(start: int, stop: int) -> np.ndarray:
        """Row 0 is the image, row r the image minus noise sample r - 1, whose score change the maps predict."""
        drawn = max(start, 1)
        noise = rng.normal(0.0, noise_std, size=(stop - drawn, *image.shape)).astype(image.dtype)
        predicted[drawn - 1 : stop - 1] = noise.reshape(len(noise), image.size) @ attribution.T
        perturbed = image - noise
        return np.concatenate([image[None], perturbed]) if start == 0 else perturbed

    scores = score_in_batches(score, samples + 1, batch_size, inputs)
    return ((predicted - (scores[0] - scores[1:])) ** 2).mean(axis=0)


def _input_shaped(image: np.ndarray, maps: np.ndarray, layout: str) -> np.ndarray:
    size = spatial_size(image, layout)
    if maps.ndim == 4 and maps.shape[1:] == image.shape:
        return maps
    if maps.ndim == 3 and maps.shape[1:] == size:
        return np.broadcast_to(over_channels(maps, layout), (maps.shape[0], *image.shape))
    raise InvalidInput(
        f"expected maps of shape (targets, {size[0]}, {size[1]}) or (targets, *{image.shape}), got {maps.shape}"
    )
