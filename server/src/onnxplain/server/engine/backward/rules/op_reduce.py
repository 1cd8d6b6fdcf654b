"""VJP rules of ReduceSum, ReduceMean, ReduceMax and ReduceMin.

The gradient is brought back to the reduced input's rank (Unsqueeze of the reduced axes when keepdims=0) and
broadcast over the reduced axes: Expand for the sum (times 1/n for the mean), a Where mask for the max and min. Axes are
an attribute below opset 13 (ReduceSum) or 18 (the others) and an input from then on; both forms are read.
"""

from __future__ import annotations

import numpy as np

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules._static import constant_ints, normalized_axes, static_dims
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("ReduceSum", "ReduceMean")
def reduce_sum_or_mean(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x, grad = node.input(0), grads[0]
    axes = _reduced_axes(ctx, node)
    if axes is None:
        return [grad]
    if node.op_type == "ReduceMean":
        count = int(np.prod(static_dims(ctx, x, axes)))
        grad = ctx.op("Mul", [grad, ctx.scalar(1.0 / count, x)])
    return [ctx.expand_like(_with_kept_dims(ctx, node, grad, axes), x)]


@vjp("ReduceMax", "ReduceMin")
def reduce_max_or_min(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """The gradient goes to the elements equal to the extreme (to each of them on ties, where torch's amax/amin
    share it out). Equality is "not below the max" (not above the min), since Equal-19 falls back to the CPU."""
    x, grad = node.input(0), grads[0]
    axes = _reduced_axes(ctx, node)
    if axes is None:
        return [grad]
    extreme = _with_kept_dims(ctx, node, node.outputs[0], axes)
    missed = ctx.op("Less" if node.op_type == "ReduceMax" else "Greater", [x, extreme])
    return [ctx.op("Where", [missed, ctx.scalar(0.0, x), _with_kept_dims(ctx, node, grad, axes)])]


def _reduced_axes(ctx: BackwardContext, node: ForwardNode) -> list[int] | None:
    """The reduced axes, sorted and non-negative; None when the node reduces nothing (empty axes with
    noop_with_empty_axes=1) and so passes its input through."""
    axes = node.attrs.get("axes")
    if axes is None and node.input(1):
        axes = constant_ints(ctx, node.input(1), f"{node.op_type} axes")
    rank = ctx.rank(node.input(0))
    if not axes:
        return None if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
    return normalized_axes(axes, rank)


def _with_kept_dims(ctx: BackwardContext, node: ForwardNode, tensor: str, axes: list[int]) -> str:
    """An output-shaped tensor with the reduced axes as size-1 dimensions, as keepdims=1 would have left them."""
    if node.attrs.get("keepdims", 1):
        return tensor
    return ctx.op("Unsqueeze", [tensor, ctx.ints(axes)])
