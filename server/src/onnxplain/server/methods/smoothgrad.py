"""SmoothGrad (Smilkov et al. 2017), SmoothGrad² and VarGrad (Adebayo et al. 2018): the gradient's mean, mean
square and variance over noisy copies of the image. Noise is Gaussian with sigma = `noise` x (max - min of the image),
the portable relative convention of the PAIR saliency code and Zennit (Captum's absolute sigma depends on the input
normalisation). Input-shaped."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.gradient_base import GradientMethod, one_hot, run_rows, session_for
from onnxplain.server.methods.parameters import Param, at_least, positive
from onnxplain.server.methods.registry import register


class NoiseTunnel(GradientMethod):
    statistic: ClassVar[str]
    parameters = (
        Param("samples", "int", 25, "Noisy copies of the image per target.", positive),
        Param("noise", "float", 0.15, "Noise sigma as a fraction of the image's value range.", at_least(0)),
        Param("seed", "int", 0, "Seed of the noise, for reproducible maps."),
    )

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        samples, targets = params["samples"], job.scorer.targets
        sigma = params["noise"] * float(job.image.max() - job.image.min())
        noise = np.random.default_rng(params["seed"]).normal(0.0, sigma, (samples, *job.image.shape))
        noisy = (job.image[None] + noise).astype(np.float32)
        # The same noisy copies serve every target.
        images = np.tile(noisy, (len(targets), 1, 1, 1))
        seeds = np.repeat(one_hot(job, targets), samples, axis=0)
        result = run_rows(job, session_for(job, self.spec(job, params)), images, seeds, "samples")
        gradients = result.input_gradient.reshape(len(targets), samples, *job.image.shape).astype(np.float64)
        if self.statistic == "mean":
            maps = gradients.mean(axis=1)
        elif self.statistic == "mean_square":
            maps = np.square(gradients).mean(axis=1)
        else:
            maps = gradients.var(axis=1)
        return Attribution(maps.astype(np.float32))


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
