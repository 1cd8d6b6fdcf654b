"""VJP rules of quantization: the straight-through estimator (STE) of quantization-aware training, as PyTorch's
fake_quantize backward defines it. Through a QuantizeLinear→DequantizeLinear pair the gradient passes unchanged
where round(x/scale) + zero_point lies within the quantized type's range, and is 0 where the forward saturated (the
ReLU a quantizer folds into a zero point of 0 included).

The gradient of a quantized (integer) tensor is carried in units of its dequantized value: DequantizeLinear passes
its gradient on as it is, and the quantizing op masks it. That is the pair's gradient only when every reader of the
integer tensor dequantizes it with the quantizing op's own scale and zero point, which the quantizing op's rule checks.
Scales and zero points are constants to the STE, as they are in quantization-aware training, even where the graph
computes them at run time (DynamicQuantizeLinear's).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnxplain.server.engine.backward.context import BackwardContext, UnknownShape
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp

# The integer range of each quantized type; float8 outputs (and their `saturate`) have no STE here.
_RANGES = {
    TensorProto.UINT8: (0, 255),
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.UINT4: (0, 15),
    TensorProto.INT4: (-8, 7),
}


@vjp("DequantizeLinear")
def dequantize_linear(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [grads[0], None, None]


@vjp("QuantizeLinear")
def quantize_linear(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x, scale, zero_point = node.input(0), node.input(1), node.input(2)
    if node.attrs.get("block_size", 0):
        raise NotImplementedError("blocked quantization (block_size) has no straight-through estimator here")
    elem = helper.np_dtype_to_tensor_dtype(ctx.dtype(zero_point or node.outputs[0]))
    if elem not in _RANGES:
        raise NotImplementedError(
            f"quantization to {TensorProto.DataType.Name(elem)}: the straight-through estimator covers the "
            "8- and 16-bit (and 4-bit) integer types"
        )
    _check_dequantized(ctx, node, scale, zero_point)
    axis = _axis(ctx, node, x)
    level = ctx.op("Round", [ctx.op("Div", [x, _along_axis(ctx, scale, x, axis)])])
    low, high = _bounds(ctx, zero_point, x, axis, _RANGES[elem])
    inside = ctx.op("And", [ctx.op("Greater", [level, low]), ctx.op("Less", [level, high])])
    return [ctx.masked(inside, grads[0], x), None, None]


@vjp("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Its scale spans the tensor's own range (0 included), so every element quantizes within range, up to rounding
    ties at the ends: the STE passes the gradient on unchanged. The scale and zero point outputs get no gradient."""
    _check_dequantized(ctx, node, node.outputs[1], node.outputs[2])
    return [grads[0]]


def _check_dequantized(ctx: BackwardContext, node: ForwardNode, scale: str, zero_point: str) -> None:
    """The STE is the gradient of a quantize-dequantize pair: refuse an integer output read any other way."""
    quantized = node.outputs[0]
    for reader in ctx.consumers(quantized):
        if reader.op_type != "DequantizeLinear" or reader.input[0] != quantized:
            raise NotImplementedError(
                f"the quantized output {quantized!r} is read by {reader.op_type} (node {reader.name!r}): the "
                "straight-through estimator is defined only for a quantize-dequantize pair (dequantize_operators "
                "rewrites quantized operators into such pairs)"
            )
        given = [reader.input[i] if i < len(reader.input) else "" for i in (1, 2)]
        if not (_same(ctx, given[0], scale) and _same(ctx, given[1], zero_point)):
            raise NotImplementedError(
                f"DequantizeLinear node {reader.name!r} dequantizes {quantized!r} with another scale or zero point "
                f"than {node.op_type} node {node.name!r} quantized it with"
            )


def _same(ctx: BackwardContext, a: str, b: str) -> bool:
    """The same tensor, or constants of equal values (an absent zero point is 0)."""
    if a == b:
        return True
    values = [np.zeros(1) if not name else ctx.value(name) for name in (a, b)]
    return all(v is not None for v in values) and np.array_equal(values[0].reshape(-1), values[1].reshape(-1))


def _axis(ctx: BackwardContext, node: ForwardNode, x: str) -> int:
    return int(node.attrs.get("axis", 1)) % max(ctx.rank(x), 1)


def _along_axis(ctx: BackwardContext, name: str, x: str, axis: int, like: str | None = None) -> str:
    """A per-axis parameter (1-D, one value per index along `axis`) shaped to broadcast against x; per-tensor ones
    as they are. `like` is the parameter the tensor was computed from, when its own shape is not known."""
    shape = ctx.shape(like or name)
    if shape is None:
        raise UnknownShape(like or name, shape)
    if len(shape) == 0 or shape == (1,):
        return name
    return ctx.op("Reshape", [name, ctx.ints([-1] + [1] * (ctx.rank(x) - 1 - axis))])


def _bounds(ctx: BackwardContext, zero_point: str, x: str, axis: int, type_range: tuple[int, int]) -> tuple[str, str]:
    """Bounds on round(x/scale) for the quantized value to lie in `type_range`: the range less the zero point,
    widened by ½ so that strict comparisons of the integer-valued level test inclusion. Float, like x."""
    low, high = type_range[0] - 0.5, type_range[1] + 0.5
    if not zero_point:
        return ctx.scalar(low, x), ctx.scalar(high, x)
    value = ctx.value(zero_point)
    if value is None:  # a zero point computed at run time
        float_type = helper.np_dtype_to_tensor_dtype(ctx.dtype(x))
        shift = _along_axis(ctx, ctx.op("Cast", [zero_point], to=float_type), x, axis, like=zero_point)
        return ctx.op("Sub", [ctx.scalar(low, x), shift]), ctx.op("Sub", [ctx.scalar(high, x), shift])
    shift = value.astype(np.float64)
    if shift.size > 1:
        shift = shift.reshape([-1] + [1] * (ctx.rank(x) - 1 - axis))
    return ctx.constant(low - shift, like=x, hint="low"), ctx.constant(high - shift, like=x, hint="high")
