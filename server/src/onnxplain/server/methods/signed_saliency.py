"""The active and inactive saliency maps of Llorente, Boal and Sánchez-Úbeda 2023 (arXiv:2309.12913): keep the
target's gradient only where it is strictly larger (active) or smaller (inactive) than every other class's gradient,
then max |.| over channels. Needs every class's gradient: one backward row per class, streamed in batches."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from onnxplain.server.engine.gradients import BackwardResult
from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.gradient_base import EveryClassMethod, channel_axis, for_every_class
from onnxplain.server.methods.registry import register


class ClassContrastSaliency(EveryClassMethod):
    # +1: the target must exceed every other class (active); -1: fall below every other class (inactive).
    direction: ClassVar[int]

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        targets = job.scorer.targets
        extremes = _TopTwo(job.image.shape)
        target_rows: dict[int, np.ndarray] = {}

        def consume(classes: np.ndarray, result: BackwardResult) -> None:
            signed = self.direction * result.input_gradient
            extremes.update(classes, signed)
            for row, class_index in enumerate(classes):
                if class_index in targets:
                    target_rows[int(class_index)] = result.input_gradient[row]

        for_every_class(job, self.spec(job, params), consume)
        maps = []
        for target in targets:
            gradient = target_rows[int(target)]
            others_best = extremes.best_excluding(int(target))
            kept = np.where(self.direction * gradient > others_best, gradient, 0.0)
            maps.append(np.abs(kept).max(axis=channel_axis(job) - 1))
        return Attribution(np.stack(maps).astype(np.float32))


class _TopTwo:
    """Running largest and second-largest value per element over classes, and which class holds the largest."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.first = np.full(shape, -np.inf, dtype=np.float32)
        self.second = np.full(shape, -np.inf, dtype=np.float32)
        self.first_class = np.full(shape, -1, dtype=np.int64)

    def update(self, classes: np.ndarray, values: np.ndarray) -> None:
        for class_index, value in zip(classes, values, strict=True):
            beats_first = value > self.first
            self.second = np.where(beats_first, self.first, np.maximum(self.second, value))
            self.first = np.where(beats_first, value, self.first)
            self.first_class = np.where(beats_first, class_index, self.first_class)

    def best_excluding(self, class_index: int) -> np.ndarray:
        return np.where(self.first_class == class_index, self.second, self.first)


@register
class ActiveSaliency(ClassContrastSaliency):
    name = "active_saliency"
    description = "Llorente et al. 2023: |gradient| where the target's gradient exceeds every other class's."
    direction = 1


@register
class InactiveSaliency(ClassContrastSaliency):
    name = "inactive_saliency"
    description = "Llorente et al. 2023: |gradient| where the target's gradient is below every other class's."
    direction = -1
