"""Published formulas written out independently of the server's code, for the tests to compare with."""

from __future__ import annotations

import numpy as np


def grad_cam_pp(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's GradCAMPlusPlus.get_cam_weights, then ReLU(Σ_k w_k A_k), for (C, h, w) A and dA."""
    squared, cubed = gradients**2, gradients**3
    alphas = squared / (2 * squared + activations.sum(axis=(1, 2))[:, None, None] * cubed + 1e-6)
    alphas = np.where(gradients != 0, alphas, 0)
    weights = (np.maximum(gradients, 0) * alphas).sum(axis=(1, 2))
    return np.maximum(np.einsum("c,chw->hw", weights, activations), 0)
