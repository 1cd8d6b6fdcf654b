"""SmoothGrad (Smilkov et al. 2017), SmoothGrad² and VarGrad (Adebayo et al. 2018): the gradient's mean, mean
square and variance over noisy copies of the image. Noise is Gaussian with sigma = `noise` x (max - min of the image),
the portable relative convention of the PAIR saliency code and Zennit (Captum's absolute sigma depends on the input
normalisation). Input-shaped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.gradient_base import GradientMethod, batched_rows, one_hot, session_for
from onnxplain.server.methods.parameters import Param, at_least, positive
from onnxplain.server.methods.registry import register


class NoiseTunnel(GradientMethod):
    statistic: ClassVar[str]
    parameters = (
        Param("samples", "int", 25, "Noisy copies of the image per target.", positive),
        Param("noise", "float", 0.15, "Noise sigma as a fraction of the image's value range.", at_least(0)),
        Param("seed", "int", 0, "Seed of the noise, for reproducible maps.", at_least(0)),
    )

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        return params["samples"] * job.scorer.target_count

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        samples, targets = params["samples"], job.scorer.targets
        count = len(targets)
        sigma = params["noise"] * float(job.image.max() - job.image.min())
        noise = NoiseStream(np.random.default_rng(params["seed"]), sigma, job.image.shape)
        seeds = one_hot(job, targets)

        # Row r is noisy copy r // count for target r % count: the same copies serve every target, and the noise is
        # drawn batch by batch, so neither the copies nor the gradients are ever all in memory.
        def rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            index = np.arange(start, stop)
            first = start // count
            copies = job.image[None] + noise.samples(first, (stop - 1) // count + 1)
            return copies[index // count - first].astype(np.float32), seeds[index % count]

        total = np.zeros((count, *job.image.shape))
        total_square = np.zeros_like(total)
        session = session_for(job, self.spec(job, params))
        for start, stop, result in batched_rows(job, session, samples * count, rows, "samples"):
            gradients = result.input_gradient.astype(np.float64)
            target_index = np.arange(start, stop) % count
            np.add.at(total, target_index, gradients)
            np.add.at(total_square, target_index, np.square(gradients))
        mean, mean_square = total / samples, total_square / samples
        maps = {"mean": mean, "mean_square": mean_square, "variance": np.maximum(mean_square - mean**2, 0.0)}
        return Attribution(maps[self.statistic].astype(np.float32))


class NoiseStream:
    """Gaussian noise for copies 0, 1, 2, ... drawn in order from one generator (the same values as one big draw),
    keeping only the copies still asked for."""

    def __init__(self, rng: np.random.Generator, sigma: float, shape: tuple[int, ...]) -> None:
        self._rng, self._sigma, self._shape = rng, sigma, shape
        self._first = 0
        self._block = np.empty((0, *shape))

    def samples(self, first: int, stop: int) -> np.ndarray:
        """Noise of copies [first, stop); `first` never goes back."""
        kept = self._block[first - self._first :]
        missing = stop - first - len(kept)
        drawn = self._rng.normal(0.0, self._sigma, (max(missing, 0), *self._shape))
        self._block, self._first = np.concatenate([kept, drawn]), first
        return self._block[: stop - first]


@register
class SmoothGrad(NoiseTunnel):
    name = "smoothgrad"
    description = "SmoothGrad: the mean gradient over noisy copies of the image, input-shaped."
    statistic = "mean"


@register
class SmoothGradSquared(NoiseTunnel):
    name = "smoothgrad_sq"
    description = "SmoothGrad²: the mean squared gradient over noisy copies of the image, input-shaped."
    statistic = "mean_square"


@register
class VarGrad(NoiseTunnel):
    name = "vargrad"
    description = "VarGrad: the variance of the gradient over noisy copies of the image, input-shaped."
    statistic = "variance"
