"""Guided backprop and deconvnet: the plain gradient with only the Relu backward changed, as Captum's GuidedBackprop
and Deconvolution swap the backward of nn.ReLU modules and nothing else (methods.md §1.6)."""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients
from onnxplain.server.engine.backward.rulesets.base import RuleSet


def _guided_relu(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """1[x > 0]·ReLU(g): only positive gradient passes, and only where the unit was active."""
    x = node.input(0)
    active = ctx.op("Greater", [x, ctx.scalar(0.0, like=x)])
    return [ctx.masked(active, ctx.op("Relu", [grads[0]]), x)]


def _deconvnet_relu(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """ReLU(g): the forward mask is ignored."""
    return [ctx.op("Relu", [grads[0]])]


GUIDED_BACKPROP = RuleSet("guided_backprop", overrides={"Relu": _guided_relu})
DECONVNET = RuleSet("deconvnet", overrides={"Relu": _deconvnet_relu})
