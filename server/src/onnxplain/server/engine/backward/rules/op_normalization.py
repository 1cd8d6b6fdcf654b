"""VJP rules of the normalization layers, for the input only: their parameters are constants in inference graphs.

BatchNormalization at inference is a per-channel affine map, so its VJP is one Mul by a constant folded at build
time. InstanceNormalization and LayerNormalization normalise with statistics of the input itself, so the backward
recomputes them (exports drop LayerNormalization's optional Mean/InvStdDev outputs) with ReduceSum times 1/n, which
every opset has in the same form, rather than ReduceMean, whose axes moved to an input at opset 18.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules._static import constant, static_dims
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp

DEFAULT_EPSILON = 1e-5


@vjp("BatchNormalization")
def batch_normalization(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """y = scale·(x - mean)/√(var + ε) + B, so dx = g·scale/√(var + ε)."""
    if node.attrs.get("training_mode", 0) or any(node.outputs[1:]):
        raise NotImplementedError("BatchNormalization in training mode (batch statistics); only inference is supported")
    _parameters_fixed(ctx, node)
    x = node.input(0)
    scale = constant(ctx, node.input(1), "BatchNormalization scale").astype(np.float64)
    variance = constant(ctx, node.input(4), "BatchNormalization variance").astype(np.float64)
    factor = scale / np.sqrt(variance + node.attrs.get("epsilon", DEFAULT_EPSILON))
    return [ctx.op("Mul", [grads[0], _per_channel(ctx, factor, x)])]


@vjp("InstanceNormalization")
def instance_normalization(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Statistics per sample and channel, over the spatial axes."""
    _parameters_fixed(ctx, node)
    x = node.input(0)
    scale = _per_channel(ctx, constant(ctx, node.input(1), "InstanceNormalization scale"), x)
    spatial = range(2, ctx.rank(x))
    return [_normalized_vjp(ctx, x, grads[0], scale, spatial, node.attrs.get("epsilon", DEFAULT_EPSILON))]


@vjp("LayerNormalization")
def layer_normalization(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Statistics over the axes [axis, rank); the scale broadcasts against those trailing axes as it is."""
    if any(grad is not None for grad in grads[1:]):
        raise NotImplementedError("gradients through LayerNormalization's Mean or InvStdDev outputs")
    _parameters_fixed(ctx, node)
    x = node.input(0)
    rank = ctx.rank(x)
    normalized = range(node.attrs.get("axis", -1) % rank, rank)
    epsilon = node.attrs.get("epsilon", DEFAULT_EPSILON)
    return [_normalized_vjp(ctx, x, grads[0], node.input(1), normalized, epsilon)]


def _normalized_vjp(ctx: BackwardContext, x: str, grad: str, scale: str, axes: Sequence[int], epsilon: float) -> str:
    """dx of y = scale·x̂ + B with x̂ = (x - mean(x))/std(x) over `axes`:
    (g·scale - mean(g·scale) - x̂·mean(g·scale·x̂))/std(x)."""
    axes = list(axes)
    inverse_count = ctx.scalar(1.0 / np.prod(static_dims(ctx, x, axes)), x)

    def mean(tensor: str) -> str:
        return ctx.op("Mul", [ctx.reduce_sum(tensor, axes), inverse_count])

    centered = ctx.op("Sub", [x, mean(x)])
    variance = mean(ctx.op("Mul", [centered, centered]))
    std = ctx.op("Sqrt", [ctx.op("Add", [variance, ctx.scalar(epsilon, x)])])
    inverse_std = ctx.op("Div", [ctx.scalar(1.0, x), std])
    normalized = ctx.op("Mul", [centered, inverse_std])
    scaled = ctx.op("Mul", [grad, scale])
    centered_grad = ctx.op("Sub", [scaled, mean(scaled)])
    projected = ctx.op("Sub", [centered_grad, ctx.op("Mul", [normalized, mean(ctx.op("Mul", [scaled, normalized]))])])
    return ctx.op("Mul", [projected, inverse_std])


def _per_channel(ctx: BackwardContext, values: np.ndarray, x: str) -> str:
    """A [C] parameter as a [C, 1, …] constant in x's dtype, broadcasting over x's spatial axes."""
    return ctx.constant(values.reshape(-1, *[1] * (ctx.rank(x) - 2)), like=x)


def _parameters_fixed(ctx: BackwardContext, node: ForwardNode) -> None:
    """These rules give the input's gradient only; a parameter computed from the differentiated input would need
    its own."""
    for name in node.inputs[1:]:
        if name and ctx.needs(name):
            raise NotImplementedError(f"the gradient of {node.op_type}'s parameter {name!r}")
