"""What an Evaluate request costs in forward passes, added up before any explainer or metric runs: every explainer's
method on every image, each metric's own passes, and the re-runs of the method that max_sensitivity and
parameter_randomization make (each one a scoring pass and an explanation). A request over the server's limit
(--max-forward-passes, per image) is refused with the numbers, instead of running until its deadline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation.metrics import CostShape, Metric

MAX_EXPLAINERS = 32
"""Explainers one request may compare: every method the server has, with room for client maps beside them."""


@dataclass(frozen=True)
class ExplainerCost:
    """One explainer's method passes for each image (0 without a method), and whether its maps come from running
    the method (False when the client sent them: then the method only runs for re-runs)."""

    method_passes: Sequence[int]
    explains: bool


@dataclass(frozen=True)
class EvaluationCost:
    images: int
    explainers: int
    # Forward passes by part, in the order they run: the scoring of the images, the methods, then each metric with
    # the re-runs it makes.
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def check(self, per_image_limit: int) -> None:
        """Refuse a request over `per_image_limit` forward passes per image (0: no limit), naming every part."""
        allowed = per_image_limit * self.images
        if not per_image_limit or self.total <= allowed:
            return
        parts = ", ".join(f"{name} {passes:,}" for name, passes in self.parts.items())
        raise InvalidInput(
            f"this evaluation needs {self.total:,} forward passes ({self.explainers} explainers on {self.images} "
            f"images: {parts}); the server allows {per_image_limit:,} per image, {allowed:,} for {self.images} "
            "images: lower the metrics' or methods' parameters, or send fewer explainers or images"
        )


def check_explainer_count(count: int) -> None:
    if count > MAX_EXPLAINERS:
        raise InvalidInput(f"the request has {count} explainers; the limit is {MAX_EXPLAINERS}")


def evaluation_cost(
    explainers: Sequence[ExplainerCost], shapes: Sequence[CostShape], metrics: Sequence[Metric], params: dict[str, Any]
) -> EvaluationCost:
    """The forward passes of every explainer on the images of `shapes` (one each, as Evaluate scores them once)."""
    parts: Counter[str] = Counter(scoring=len(shapes))
    for explainer in explainers:
        for method_passes, shape in zip(explainer.method_passes, shapes, strict=True):
            if explainer.explains:
                parts["methods"] += method_passes
            for metric in metrics:
                cost = metric.cost(shape, params)
                parts[metric.name] += cost.passes + cost.reruns * (1 + method_passes)
    return EvaluationCost(len(shapes), len(explainers), {name: passes for name, passes in parts.items() if passes})
