"""Feature visualisation by activation maximisation (Simonyan et al. 2014; the visualisation family of the idealo
talk): gradient ascent on the input for a class score, or for the mean activation of one channel of a layer, with
random jitter (shifts) and decay towards the image mean as regularisers. Returns the synthesized input, input-shaped,
one per target; the targets run together as rows of one batch per step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxplain.server.engine.gradients import BackwardSpec
from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import Attribution, ExplainJob, Family
from onnxplain.server.methods.gradient_base import GradientMethod, input_bounds, one_hot, run_rows, session_for
from onnxplain.server.methods.parameters import Param, at_least, positive
from onnxplain.server.methods.perturbation import check_pass_limit
from onnxplain.server.methods.registry import register


def _fraction(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value}"


def _start(value: str) -> str | None:
    return None if value in ("noise", "image") else f"must be 'noise' or 'image', got {value!r}"


@register
class FeatureVisualization(GradientMethod):
    name = "feature_visualization"
    family: Family = "visualization"
    description = "Activation maximisation: the input that most excites a class (or a layer's channel)."
    parameters = (
        Param("steps", "int", 128, "Gradient-ascent steps.", positive),
        Param("learning_rate", "float", 0.05, "Step size as a fraction of the input range.", positive),
        Param("jitter", "int", 4, "Largest random shift in pixels per step (0: none).", at_least(0)),
        Param("decay", "float", 0.01, "Per-step pull towards the mid value of the input range.", _fraction),
        Param(
            "start", "str", "noise", "'noise' (small noise around mid-range) or 'image' (the request image).", _start
        ),
        Param("layer", "str", "", "A 4-D tensor whose `channel` to maximise instead of the target class."),
        Param("channel", "int", 0, "The channel of `layer` to maximise.", at_least(0)),
        Param("seed", "int", 0, "Seed of the start noise and the jitter.", at_least(0)),
    )

    def spec(self, job: ExplainJob, params: dict[str, Any]) -> BackwardSpec:
        return BackwardSpec(objective=params["layer"] or None, probability=job.scorer.space == "probability")

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        """One row per target (or the layer's channel) per step."""
        return params["steps"] * max(1, job.scorer.target_count)

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        rng = np.random.default_rng(params["seed"])
        low, high = input_bounds(job)
        span, middle = high - low, 0.5 * (high + low)
        session = session_for(job, self.spec(job, params))
        seeds = self._seeds(job, params, session.seed_shape)
        rows = len(seeds)
        check_pass_limit(job, params["steps"] * rows, "steps")
        if params["start"] == "image":
            images = np.repeat(job.image[None], rows, axis=0).astype(np.float64)
        else:
            images = middle + 0.01 * span * rng.standard_normal((rows, *job.image.shape))
        axes = (2, 3) if job.layout == "NCHW" else (1, 2)
        for _ in range(params["steps"]):
            shift = tuple(rng.integers(-params["jitter"], params["jitter"] + 1, size=2)) if params["jitter"] else (0, 0)
            shifted = np.roll(images, shift, axis=axes).astype(np.float32)
            gradient = np.roll(
                run_rows(job, session, shifted, seeds).input_gradient, tuple(-s for s in shift), axis=axes
            )
            scale = np.abs(gradient).reshape(rows, -1).mean(axis=1).reshape(-1, *([1] * job.image.ndim)) + 1e-12
            images += params["learning_rate"] * span * gradient / scale
            images = np.clip(middle + (1.0 - params["decay"]) * (images - middle), low, high)
        return Attribution(images.astype(np.float32))

    @staticmethod
    def _seeds(job: ExplainJob, params: dict[str, Any], seed_shape: tuple[int | None, ...]) -> np.ndarray:
        if not params["layer"]:
            return one_hot(job, job.scorer.targets)
        if len(seed_shape) != 4 or not 0 <= params["channel"] < (seed_shape[1] or 0):
            raise InvalidInput(f"parameter 'channel': layer {params['layer']!r} has shape {seed_shape}")
        seed = np.zeros((1, *seed_shape[1:]), dtype=np.float32)
        seed[0, params["channel"]] = 1.0 / float(np.prod(seed_shape[2:]))
        return seed.reshape(1, -1)
