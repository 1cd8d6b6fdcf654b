"""VJP rules of the normalization layers, for the input only: their parameters are constants in inference graphs.

BatchNormalization at inference is a per-channel affine map, so its VJP is one Mul by a constant folded at build
time. InstanceNormalization, GroupNormalization and LayerNormalization normalise with statistics of the input
itself, so the backward recomputes them (exports drop LayerNormalization's optional Mean/InvStdDev outputs) with
ReduceSum times 1/n, which every opset has in the same form, rather than ReduceMean, whose axes moved to an input at
opset 18.
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
    spatial = list(range(2, ctx.rank(x)))
    scaled = ctx.op("Mul", [grads[0], scale])
    count = int(np.prod(static_dims(ctx, x, spatial)))
    return [_normalized_vjp(ctx, x, scaled, spatial, count, node.attrs.get("epsilon", DEFAULT_EPSILON), like=x)]


@vjp("GroupNormalization")
def group_normalization(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Statistics per sample and group of C/G channels, over those channels and the spatial axes: x and g are
    reshaped to [N, G, C/G·spatial] and normalised on the last axis. The scale is per group at opset 18, per channel
    from opset 21 (it multiplies g before the reshape there)."""
    _parameters_fixed(ctx, node)
    x = node.input(0)
    groups = node.attrs["num_groups"]
    channels, *spatial = static_dims(ctx, x, range(1, ctx.rank(x)))
    scale = constant(ctx, node.input(1), "GroupNormalization scale")
    grouped = ctx.ints([0, groups, -1])  # 0 copies the (possibly symbolic) batch

    def regrouped(tensor: str) -> str:
        return ctx.op("Reshape", [tensor, grouped])

    if ctx.opset >= 21:
        scaled = regrouped(ctx.op("Mul", [grads[0], _per_channel(ctx, scale, x)]))
    else:
        scaled = ctx.op("Mul", [regrouped(grads[0]), ctx.constant(scale.reshape(groups, 1), like=x)])
    count = channels // groups * int(np.prod(spatial))
    epsilon = node.attrs.get("epsilon", DEFAULT_EPSILON)
    return [ctx.reshape_like(_normalized_vjp(ctx, regrouped(x), scaled, [2], count, epsilon, like=x), x)]


@vjp("LayerNormalization")
def layer_normalization(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Statistics over the axes [axis, rank); the scale broadcasts against those trailing axes as it is."""
    if any(grad is not None for grad in grads[1:]):
        raise NotImplementedError("gradients through LayerNormalization's Mean or InvStdDev outputs")
    _parameters_fixed(ctx, node)
    x = node.input(0)
    rank = ctx.rank(x)
    normalized = list(range(node.attrs.get("axis", -1) % rank, rank))
    epsilon = node.attrs.get("epsilon", DEFAULT_EPSILON)
    scaled = ctx.op("Mul", [grads[0], node.input(1)])
    count = int(np.prod(static_dims(ctx, x, normalized)))
    return [_normalized_vjp(ctx, x, scaled, normalized, count, epsilon, like=x)]


def _normalized_vjp(
    ctx: BackwardContext, x: str, scaled: str, axes: Sequence[int], count: int, epsilon: float, like: str
) -> str:
    """dx of y = scale·x̂ + B with x̂ = (x - mean(x))/std(x) over `axes` (`count` elements), given scaled = g·scale:
    (scaled - mean(scaled) - x̂·mean(scaled·x̂))/std(x). `like` is a forward tensor of x's dtype (x may be a new,
    reshaped one)."""
    axes = list(axes)
    inverse_count = ctx.scalar(1.0 / count, like)

    def mean(tensor: str) -> str:
        return ctx.op("Mul", [ctx.reduce_sum(tensor, axes), inverse_count])

    centered = ctx.op("Sub", [x, mean(x)])
    variance = mean(ctx.op("Mul", [centered, centered]))
    std = ctx.op("Sqrt", [ctx.op("Add", [variance, ctx.scalar(epsilon, like)])])
    inverse_std = ctx.op("Div", [ctx.scalar(1.0, like), std])
    normalized = ctx.op("Mul", [centered, inverse_std])
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
