"""The plain input-gradient maps: signed gradient, saliency (Simonyan et al. 2014), gradient x input, and the
positive / negative saliency of Llorente et al. 2023. One forward and one backward pass per target."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.gradient_base import GradientMethod, channel_axis, target_gradients
from onnxplain.server.methods.registry import register


class InputGradientMethod(GradientMethod):
    """Maps computed from each target's input gradient alone; variants override `from_gradient`."""

    single_pass = True

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        gradients = target_gradients(job, self.spec(job, params)).input_gradient
        return Attribution(self.from_gradient(job, gradients))

    def from_gradient(self, job: ExplainJob, gradients: np.ndarray) -> np.ndarray:
        return gradients


@register
class Gradient(InputGradientMethod):
    name = "gradient"
    description = "The signed gradient of the target score with respect to the input, input-shaped."


@register
class GradientXInput(InputGradientMethod):
    name = "gradient_x_input"
    description = "Input times gradient, input-shaped (Captum InputXGradient)."

    def from_gradient(self, job: ExplainJob, gradients: np.ndarray) -> np.ndarray:
        return gradients * job.image[None]


class ChannelMaxMethod(InputGradientMethod):
    """max over channels of a transform of the gradient, (T, H, W), as TorchRay, Xplique and Llorente reduce."""

    transform: ClassVar[str]

    def from_gradient(self, job: ExplainJob, gradients: np.ndarray) -> np.ndarray:
        transformed = {"abs": np.abs, "positive": _positive, "negative": _negative}[self.transform](gradients)
        return transformed.max(axis=channel_axis(job))


@register
class Saliency(ChannelMaxMethod):
    name = "saliency"
    description = "Saliency (Simonyan et al. 2014): max over channels of |gradient|."
    transform = "abs"


@register
class PositiveSaliency(ChannelMaxMethod):
    name = "positive_saliency"
    description = "Llorente et al. 2023: max over channels of ReLU(gradient): pixels whose increase raises the score."
    transform = "positive"


@register
class NegativeSaliency(ChannelMaxMethod):
    name = "negative_saliency"
    description = "Llorente et al. 2023: max over channels of ReLU(-gradient): pixels whose increase lowers the score."
    transform = "negative"


def _positive(values: np.ndarray) -> np.ndarray:
    return np.maximum(values, 0.0)


def _negative(values: np.ndarray) -> np.ndarray:
    return np.maximum(-values, 0.0)
