"""VJP rules of the ops that pick one operand per element: Where, and the variadic, broadcasting Max and Min.

Where routes g to its value inputs through the condition (which gets no gradient). Max and Min give g to the
operand that is the extreme; where several are (ties), they share it equally, as torch.maximum/minimum split it in
half between two. "Is the extreme" is "not below the max" (not above the min): Equal-19 has no CUDA kernel.
"""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("Where")
def where(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    condition, a, b = node.inputs
    y, g = node.outputs[0], grads[0]
    da = ctx.unbroadcast(ctx.masked(condition, g, y), a, y) if ctx.needs(a) else None
    db = ctx.unbroadcast(ctx.op("Where", [condition, ctx.scalar(0.0, y), g]), b, y) if ctx.needs(b) else None
    return [None, da, db]


@vjp("Max", "Min")
def extreme(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    y, g = node.outputs[0], grads[0]
    if len(node.inputs) == 1:
        return [g]
    zero, one = ctx.scalar(0.0, y), ctx.scalar(1.0, y)
    missed = "Less" if node.op_type == "Max" else "Greater"
    # 1 where the operand is the extreme, 0 elsewhere, in the output's shape.
    hits = [ctx.op("Where", [ctx.op(missed, [operand, y]), zero, one]) for operand in node.inputs]
    share = ctx.op("Div", [g, ctx.sum(hits)])
    return [
        ctx.unbroadcast(ctx.op("Mul", [share, hit]), operand, y) if ctx.needs(operand) else None
        for operand, hit in zip(node.inputs, hits, strict=True)
    ]
