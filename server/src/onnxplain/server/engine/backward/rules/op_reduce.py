"""VJP rules of the Reduce ops (all but ReduceProd, whose gradient at zeros needs products of the other elements).

The gradient is brought back to the reduced input's rank (Unsqueeze of the reduced axes when keepdims=0) and
broadcast over the reduced axes: Expand for the sum (times 1/n for the mean), a Where mask for the max and min, the
elementwise slope of the reduced term for the others. Axes are an attribute below opset 13 (ReduceSum) or 18 (the
others) and an input from then on; both forms are read. With empty axes and noop_with_empty_axes=1 ONNX Runtime
applies the elementwise part (square, abs, log) without reducing, which the slopes below cover as a reduction over no
axes.
"""

from __future__ import annotations

import numpy as np

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules import _norm
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


@vjp("ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceLogSum")
def reduce_of_elementwise(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """y = reduce(f(x)): dx = g·∂y/∂x, with g and y in the input's rank broadcasting over the reduced axes."""
    x = node.input(0)
    axes = _reduced_axes(ctx, node) or []
    g, y = (_with_kept_dims(ctx, node, tensor, axes) for tensor in (grads[0], node.outputs[0]))
    if node.op_type == "ReduceSumSquare":
        return [ctx.op("Mul", [g, ctx.op("Mul", [x, ctx.scalar(2.0, x)])])]
    if node.op_type == "ReduceL1":
        return [ctx.op("Mul", [g, _norm.input_factor(ctx, x, 1)])]
    if node.op_type == "ReduceL2":
        return [ctx.op("Mul", [_norm.output_factor(ctx, g, y, 2, like=x), _norm.input_factor(ctx, x, 2)])]
    if node.op_type == "ReduceLogSumExp":
        return [ctx.op("Mul", [g, ctx.op("Exp", [ctx.op("Sub", [x, y])])])]
    return [ctx.expand_like(ctx.op("Div", [g, ctx.op("Exp", [y])]), x)]  # ReduceLogSum: g/Σx


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
    if node.attrs.get("keepdims", 1) or not axes:
        return tensor
    return ctx.op("Unsqueeze", [tensor, ctx.ints(axes)])
