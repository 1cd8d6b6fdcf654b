"""VJP rules of unary math ops that are not activations: Abs, Log, Sin, Cos, and the piecewise-constant Sign, Floor,
Ceil and Round, whose gradient is zero almost everywhere (torch's backward gives 0 at the jumps too).

The zero gradient is emitted rather than left out: a target reached only through such an op then gets a zero map, as
in torch, instead of the builder reporting that the target does not depend on the input.
"""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("Abs")
def abs_(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """g·sign(x): 0 at x = 0, as torch."""
    return [ctx.op("Mul", [grads[0], ctx.op("Sign", [node.inputs[0]])])]


@vjp("Log")
def log(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [ctx.op("Div", [grads[0], node.inputs[0]])]


@vjp("Sin")
def sin(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [ctx.op("Mul", [grads[0], ctx.op("Cos", [node.inputs[0]])])]


@vjp("Cos")
def cos(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [ctx.op("Neg", [ctx.op("Mul", [grads[0], ctx.op("Sin", [node.inputs[0]])])])]


@vjp("Sign", "Floor", "Ceil", "Round")
def piecewise_constant(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [ctx.zeros_like(node.inputs[0])]
