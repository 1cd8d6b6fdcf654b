"""The template every perturbation method shares: plan perturbations, score them in batches, accumulate maps.

A method supplies a PerturbationPlan; the template owns batching, cancellation checks, pass limits and progress,
so all perturbation methods run at the speed of plain batched forward passes.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Protocol

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import AttributionMethod, ExplainJob, Family, Progress

# Partial maps are sent at most this often (in batches) to keep streaming cheap.
_PARTIAL_EVERY = 4


class PerturbationPlan(Protocol):
    count: int

    def perturbed(self, start: int, stop: int) -> np.ndarray:
        """Inputs for perturbations [start, stop) in the model's layout, shape (stop - start, *input shape)."""

    def accumulate(self, start: int, stop: int, deltas: np.ndarray) -> None:
        """Take (stop - start, T) score changes: score(original) - score(perturbed)."""

    def maps(self) -> np.ndarray:
        """(T, H, W) maps from what was accumulated so far."""


class PerturbationMethod(AttributionMethod):
    family: ClassVar[Family] = "perturbation"

    @abstractmethod
    def plan(self, job: ExplainJob, params: dict[str, Any]) -> PerturbationPlan:
        """Validate parameters against the image and lay out the perturbations."""

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> np.ndarray:
        plan = self.plan(job, params)
        if job.max_forward_passes and plan.count > job.max_forward_passes:
            raise InvalidInput(
                f"method {self.name!r} with these parameters needs {plan.count} forward passes; "
                f"the server allows {job.max_forward_passes} per image"
            )
        original = job.scorer.select(job.scores[None, :])[0]
        for index, start in enumerate(range(0, plan.count, job.batch_size)):
            stop = min(start + job.batch_size, plan.count)
            plan.accumulate(start, stop, original[None, :] - job.scorer(plan.perturbed(start, stop)))
            if job.progress is not None:
                partial = plan.maps() if index % _PARTIAL_EVERY == _PARTIAL_EVERY - 1 else None
                job.progress(Progress(stop, plan.count, partial))
        return plan.maps()
