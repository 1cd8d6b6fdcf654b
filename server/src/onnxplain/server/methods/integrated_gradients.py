"""Integrated gradients (Sundararajan et al. 2017) with Captum's quadratures:
IG = (x - x') Σ_k w_k ∇f(x' + a_k (x - x')). All steps of all targets are rows of batched backward runs, built and
summed batch by batch. The completeness delta Σ IG - (f(x) - f(x')) is returned
per target as the extra `convergence_delta` (two more rows: x and x' themselves)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.baselines import BASELINE_CHOICES, baseline_image
from onnxplain.server.methods.gradient_base import GradientMethod, batched_rows, one_hot, session_for
from onnxplain.server.methods.parameters import Param, choice, one_of, positive
from onnxplain.server.methods.perturbation import check_pass_limit
from onnxplain.server.methods.registry import register

# Gauss-Legendre nodes come from an eigenproblem of size steps x steps (Captum's numpy call): beyond this it costs
# more than the passes.
MAX_GAUSS_LEGENDRE_STEPS = 1000
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

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        return params["steps"] * job.scorer.target_count + 2

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        steps, targets = params["steps"], job.scorer.targets
        count = len(targets)
        if params["quadrature"] == "gausslegendre" and steps > MAX_GAUSS_LEGENDRE_STEPS:
            raise InvalidInput(
                f"parameter 'steps': gausslegendre takes at most {MAX_GAUSS_LEGENDRE_STEPS} steps (its nodes cost "
                f"steps^2 memory); got {steps}: use a riemann quadrature for more"
            )
        check_pass_limit(job, steps * count + 2, "steps")
        alphas, weights = quadrature(params["quadrature"], steps)
        baseline = baseline_image(job, params["baseline"], params["blur_sigma"])
        difference = job.image - baseline
        seeds = np.concatenate([one_hot(job, targets), np.zeros((1, job.num_classes))]).astype(np.float32)
        path_rows = steps * count

        # Rows: every step of every target (target-major), then x' and x with zero seeds for the completeness
        # delta; built per batch and summed as they come, so the path is never all in memory.
        def rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            index = np.arange(start, stop)
            on_path = index < path_rows
            alpha = np.where(on_path, alphas[index % steps], (index - path_rows).astype(np.float64))
            images = baseline[None] + alpha.astype(np.float32)[:, None, None, None] * difference[None]
            return images.astype(np.float32), seeds[np.where(on_path, index // steps, count)]

        weighted = np.zeros((count, *job.image.shape))
        end_scores = np.zeros((2, job.num_classes))
        session = session_for(job, self.spec(job, params))
        for start, stop, result in batched_rows(job, session, path_rows + 2, rows, "steps"):
            index = np.arange(start, stop)
            on_path = index < path_rows
            step_weights = weights[index[on_path] % steps][:, None, None, None]
            np.add.at(weighted, index[on_path] // steps, step_weights * result.input_gradient[on_path])
            end_scores[index[~on_path] - path_rows] = result.scores[~on_path]
        attributions = difference[None] * weighted
        score_change = end_scores[1, targets] - end_scores[0, targets]
        delta = attributions.reshape(count, -1).sum(axis=1) - score_change
        return Attribution(attributions.astype(np.float32), extras={"convergence_delta": delta.astype(np.float32)})
