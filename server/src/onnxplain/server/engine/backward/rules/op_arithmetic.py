"""VJP rules of the broadcasting arithmetic ops. Either operand may broadcast (a [C,1,1] bias, a scalar, a
lower-rank operand): each gradient is summed back to its operand's shape. The same tensor may feed several inputs
(Mul(x, x)); each position gets its own gradient and the builder sums them."""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("Add", "Sum")
def add(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [_to_operand(ctx, grads[0], operand, node) for operand in node.inputs]


@vjp("Mean")
def mean(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """The variadic mean: Sum's VJP of g/n."""
    share = ctx.op("Mul", [grads[0], ctx.scalar(1.0 / len(node.inputs), node.outputs[0])])
    return [_to_operand(ctx, share, operand, node) for operand in node.inputs]


@vjp("Sub")
def sub(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    a, b = node.inputs
    return [_to_operand(ctx, grads[0], a, node), _negated(ctx, _to_operand(ctx, grads[0], b, node))]


@vjp("Neg")
def neg(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [ctx.op("Neg", [grads[0]])]


@vjp("Mul")
def mul(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    a, b = node.inputs
    return [
        _to_operand(ctx, grads[0], a, node, times=b),
        _to_operand(ctx, grads[0], b, node, times=a),
    ]


@vjp("Div")
def div(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """y = a/b: da = g/b, db = -g·y/b."""
    a, b = node.inputs
    da = ctx.op("Div", [grads[0], b]) if ctx.needs(a) else None
    db = ctx.op("Div", [ctx.op("Mul", [grads[0], node.outputs[0]]), b]) if ctx.needs(b) else None
    return [_to_operand(ctx, da, a, node), _negated(ctx, _to_operand(ctx, db, b, node))]


def _to_operand(
    ctx: BackwardContext, grad: str | None, operand: str, node: ForwardNode, times: str | None = None
) -> str | None:
    """The gradient of `operand` (None when not needed): `grad` (times `times`) summed over the broadcast axes."""
    if grad is None or not ctx.needs(operand):
        return None
    if times is not None:
        grad = ctx.op("Mul", [grad, times])
    return ctx.unbroadcast(grad, operand, node.outputs[0])


def _negated(ctx: BackwardContext, grad: str | None) -> str | None:
    """Negation after the unbroadcast: on the (often smaller) operand-shaped gradient."""
    return None if grad is None else ctx.op("Neg", [grad])
