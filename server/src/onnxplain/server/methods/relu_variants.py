"""Guided backprop (Springenberg et al. 2015) and deconvnet (Zeiler & Fergus 2014): the input gradient with the
ReLU backward swapped (see engine/backward/rulesets/relu_variants.py). Input-shaped, one backward per target."""

from __future__ import annotations

from onnxplain.server.engine.backward.rulesets import get_ruleset
from onnxplain.server.engine.backward.support import DECONVNET, GUIDED_BACKPROP
from onnxplain.server.methods.gradient import InputGradientMethod
from onnxplain.server.methods.registry import register


@register
class GuidedBackprop(InputGradientMethod):
    name = "guided_backprop"
    description = "Guided backprop: ReLUs pass only positive gradients where their input was positive."
    ruleset = get_ruleset("guided_backprop")
    walks = (GUIDED_BACKPROP,)


@register
class Deconvnet(InputGradientMethod):
    name = "deconvnet"
    description = "Deconvnet: ReLUs pass positive gradients whatever their input was."
    ruleset = get_ruleset("deconvnet")
    walks = (DECONVNET,)
