"""The template every perturbation method shares: plan perturbations, score them in batches, accumulate maps.

A method supplies a PerturbationPlan; the template owns batching, cancellation checks, pass limits and progress,
so all perturbation methods run at the speed of plain batched forward passes.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import Attribution, AttributionMethod, ExplainJob, Family, Progress


class PerturbationPlan(Protocol):
    count: int

    def perturbed(self, start: int, stop: int) -> np.ndarray:
        """Inputs for perturbations [start, stop) in the model's layout, shape (stop - start, *input shape).
        Called from a helper thread one batch ahead, so it must not change what accumulate() reads; it may keep
        what it built for this batch, by `start`, for accumulate(start, ...) to take (RISE's masks)."""

    def accumulate(self, start: int, stop: int, scores: np.ndarray) -> None:
        """Take the (stop - start, T) target scores of those perturbed inputs."""

    def result(self) -> Attribution:
        """Maps from what was accumulated so far."""


@runtime_checkable
class SelfScoringPlan(PerturbationPlan, Protocol):
    """A plan that scores its own batches, e.g. through a derived graph that perturbs, runs the model and
    accumulates in one ONNX Runtime run. `perturbed` then returns whatever that run needs (it is still built one
    batch ahead), and `score` takes the place of the job's scorer and `accumulate`: it must record its passes in
    job.scorer.passes and run under job.scorer.token."""

    def score(self, start: int, stop: int, prepared: Any) -> None:
        """Score and accumulate perturbations [start, stop) from what `perturbed(start, stop)` returned."""


class PerturbationMethod(AttributionMethod):
    family: ClassVar[Family] = "perturbation"

    @abstractmethod
    def plan(self, job: ExplainJob, params: dict[str, Any]) -> PerturbationPlan:
        """Validate parameters against the image and lay out the perturbations."""

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        plan = self.plan(job, params)
        check_pass_limit(job, plan.count)
        batches = [(start, min(start + job.batch_size, plan.count)) for start in range(0, plan.count, job.batch_size)]
        # Perturbations for batch i + 1 are built while ONNX Runtime (which releases the GIL) runs batch i.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxplain-perturb") as builder:
            upcoming = builder.submit(plan.perturbed, *batches[0])
            last_partial = time.monotonic()
            for index, (start, stop) in enumerate(batches):
                inputs = upcoming.result()
                if index + 1 < len(batches):
                    upcoming = builder.submit(plan.perturbed, *batches[index + 1])
                if isinstance(plan, SelfScoringPlan):
                    plan.score(start, stop, inputs)
                else:
                    plan.accumulate(start, stop, job.scorer(inputs))
                if job.progress is not None:
                    partial = None
                    if time.monotonic() - last_partial >= job.partial_interval_s and stop < plan.count:
                        partial, last_partial = plan.result().maps, time.monotonic()
                    job.progress(Progress(stop, plan.count, partial))
        return plan.result()


def check_pass_limit(job: ExplainJob, passes: int, parameter: str | None = None) -> None:
    """Refuse work over the server's per-image pass limit. Plans call it with the parameter that sets the count
    before they build anything large; the template calls it again for every plan."""
    if not job.max_forward_passes or passes <= job.max_forward_passes:
        return
    cause = f"parameter {parameter!r}: this" if parameter else "these parameters"
    raise InvalidInput(f"{cause} needs {passes} forward passes; the server allows {job.max_forward_passes} per image")
