"""VJP rules of Softmax and LogSoftmax in their opset-13 form: one axis (default -1), normalised on its own.

Softmax: dx = y·(g - Σ_axis g·y); LogSoftmax: dx = g - softmax(x)·Σ_axis g, with softmax(x) = Exp(y).
"""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("Softmax")
def softmax(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    g, y = grads[0], node.outputs[0]
    total = ctx.reduce_sum(ctx.op("Mul", [g, y]), [_axis(ctx, node)])
    return [ctx.op("Mul", [y, ctx.op("Sub", [g, total])])]


@vjp("LogSoftmax")
def log_softmax(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    g, y = grads[0], node.outputs[0]
    total = ctx.reduce_sum(g, [_axis(ctx, node)])
    return [ctx.op("Sub", [g, ctx.op("Mul", [ctx.op("Exp", [y]), total])])]


def _axis(ctx: BackwardContext, node: ForwardNode) -> int:
    if ctx.opset < 13:
        # Before 13 the op flattened the input to 2-D at `axis`; the builder raises models to opset 16 first.
        raise NotImplementedError(f"{node.op_type} below opset 13 (coerced to 2-D) is not supported")
    return node.attrs.get("axis", -1)
