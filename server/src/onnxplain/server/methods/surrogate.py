"""The linear models lime and kernel_shap fit to the scores of images with some segments kept: sample weights and
weighted least squares in numpy, every target solved at once (one right-hand side per target, the same fit as one
per target).

`keep` is always an (n, M) bool matrix: row i says which of the M segments sample i kept.
"""

from __future__ import annotations

import math

import numpy as np


def lime_weights(keep: np.ndarray, kernel_width: float) -> np.ndarray:
    """(n,) lime_image's kernel sqrt(exp(-d^2 / w^2)), d the cosine distance between a sample and the all-on vector.

    For a binary row with k of M segments on, cos = k / (sqrt(k) sqrt(M)) = sqrt(k / M); an all-off row has
    distance 1, as sklearn's cosine distance (which lime uses) gives it."""
    segments = keep.shape[1]
    distance = 1.0 - np.sqrt(keep.sum(axis=1) / segments)
    return np.sqrt(np.exp(-(distance**2) / kernel_width**2))


def weighted_ridge(
    features: np.ndarray, targets: np.ndarray, weights: np.ndarray, alpha: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (T, M) and intercepts (T,) minimising sum_i w_i (y_i - x_i b - c)^2 + alpha |b|^2 for each of
    the T columns of `targets` (n, T): sklearn's Ridge(alpha, fit_intercept=True) with sample_weight, which lime
    fits. The intercept is not penalised: centre on the weighted means, then solve the normal equations."""
    x = features.astype(np.float64)
    y = targets.astype(np.float64)
    w = weights.astype(np.float64)
    x_mean = w @ x / w.sum()
    y_mean = w @ y / w.sum()
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ (w[:, None] * xc) + alpha * np.eye(x.shape[1])
    coefficients = np.linalg.solve(gram, xc.T @ (w[:, None] * yc))
    return coefficients.T, y_mean - x_mean @ coefficients


def shapley_kernel(sizes: np.ndarray, segments: int) -> np.ndarray:
    """(M - 1) / (C(M, k) k (M - k)) for coalitions of k of M segments, 0 < k < M (the endpoints are infinite and
    enter as the exact constraint in shapley_regression instead)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    binomials = np.array([math.comb(segments, int(k)) for k in range(segments + 1)], dtype=np.float64)
    return (segments - 1) / (binomials[sizes] * sizes * (segments - sizes))


def shapley_regression(keep: np.ndarray, values: np.ndarray, weights: np.ndarray, total: np.ndarray) -> np.ndarray:
    """(T, M) Shapley values phi from KernelSHAP's weighted least squares: minimise
    sum_i w_i (v_i - keep_i phi)^2 subject to sum(phi) = total, for each target.

    `values` (n, T) are f(coalition) - f(all off), `total` (T,) is f(x) - f(all off). The constraint is exact, as in
    shap's KernelExplainer: the last segment is eliminated, phi_M = total - sum(phi_1..M-1), leaving an
    unconstrained fit of v - keep_M total on keep_j - keep_M. With every coalition and its kernel weight this gives
    the Shapley values exactly."""
    segments = keep.shape[1]
    total = total.astype(np.float64)
    if segments == 1 or len(keep) == 0:
        # Nothing to tell the segments apart (one segment, or no coalition scored yet): share the total equally.
        return np.repeat(total[:, None] / segments, segments, axis=1)
    z = keep.astype(np.float64)
    design = z[:, :-1] - z[:, -1:]
    response = values.astype(np.float64) - z[:, -1:] * total[None, :]
    root = np.sqrt(weights.astype(np.float64))[:, None]
    head, *_ = np.linalg.lstsq(design * root, response * root, rcond=None)
    return np.concatenate([head.T, (total - head.sum(axis=0))[:, None]], axis=1)
