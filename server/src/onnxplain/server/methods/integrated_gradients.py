"""Integrated gradients (Sundararajan et al. 2017) with Captum's quadratures:
IG = (x - x') Σ_k w_k ∇f(x' + a_k (x - x')). All steps of all targets are rows of batched backward runs.
The completeness delta Σ IG - (f(x) - f(x')) is returned
per target as the extra `convergence_delta` (two more rows: x and x' themselves)."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.baselines import BASELINE_CHOICES, baseline_image
from onnxplain.server.methods.gradient_base import GradientMethod, one_hot, run_rows, session_for
from onnxplain.server.methods.parameters import Param, choice, one_of, positive
from onnxplain.server.methods.registry import register

QUADRATURES = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) exactly as Captum's approximation_methods."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    weights = np.full(steps, 1.0 / steps)
    if method == "riemann_trapezoid":
        weights[[0, -1]] *= 0.5
        return np.linspace(0.0, 1.0, steps), weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    return (np.arange(steps) + offsets[method]) / steps, weights


@register
class IntegratedGradients(GradientMethod):
    name = "integrated_gradients"
    description = "Integrated gradients (Captum's defaults: 50 Gauss-Legendre steps, zero baseline), input-shaped."
    parameters = (
        Param("steps", "int", 50, "Quadrature steps along the path from baseline to image.", positive),
        Param("quadrature", "str", "gausslegendre", f"One of {', '.join(QUADRATURES)}.", choice(*QUADRATURES)),
        Param(
            "baseline", "float_or_str", 0.0, "A constant, or 'mean' / 'blur' of the image.", one_of(*BASELINE_CHOICES)
        ),
        Param("blur_sigma", "float", 10.0, "Blur of the 'blur' baseline, in pixels.", positive),
    )

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        steps, targets = params["steps"], job.scorer.targets
        alphas, weights = quadrature(params["quadrature"], steps)
        baseline = baseline_image(job, params["baseline"], params["blur_sigma"])
        difference = job.image - baseline
        # Rows: every step for every target, then x' and x with zero seeds for the completeness delta.
        path = baseline[None] + alphas[:, None, None, None].astype(np.float32) * difference[None]
        images = np.concatenate([np.tile(path, (len(targets), 1, 1, 1)), baseline[None], job.image[None]])
        seeds = np.concatenate([np.repeat(one_hot(job, targets), steps, axis=0), np.zeros((2, len(job.scores)))])
        result = run_rows(job, session_for(job, self.spec(job, params)), images, seeds.astype(np.float32), "steps")
        gradients = result.input_gradient[:-2].reshape(len(targets), steps, *job.image.shape)
        attributions = difference[None] * np.tensordot(weights, gradients, axes=([0], [1]))
        score_change = result.scores[-1, targets] - result.scores[-2, targets]
        delta = attributions.reshape(len(targets), -1).sum(axis=1) - score_change
        return Attribution(attributions.astype(np.float32), extras={"convergence_delta": delta.astype(np.float32)})
