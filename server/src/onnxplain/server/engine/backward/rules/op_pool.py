"""VJP rules: MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalLpPool, GlobalMaxPool.

MaxPool routes each gradient to the element its Indices output names, by a scatter-add (MaxUnpool assigns instead
of adding, so it is wrong for overlapping windows; onnx-backward.md §4.1). AveragePool spreads g/divisor over each
window with a transposed window sum (LpPool spreads its norm's gradient the same way); the backward never runs
AveragePool itself (the CUDA provider gets it wrong with asymmetric pads and ceil_mode, §6)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from onnxplain.server.engine.backward.context import BackwardContext, UnknownShape
from onnxplain.server.engine.backward.rules import _norm
from onnxplain.server.engine.backward.rules._spatial import Window, spatial_dims, transposed_window_sum, window
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("MaxPool")
def max_pool(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    if node.attrs.get("storage_order", 0):
        raise NotImplementedError("MaxPool with storage_order=1 (column-major Indices)")
    x = node.input(0)
    indices = ctx.forward_output(node.proto, 1, "maxpool_indices")
    flat = ctx.ints([-1])
    # Indices are flat over N·C·H·W (batch and channel offsets included), so one scatter along a flat axis suffices.
    scattered = ctx.op(
        "ScatterElements",
        [_flat_zeros(ctx, x), ctx.op("Reshape", [indices, flat]), ctx.op("Reshape", [grads[0], flat])],
        axis=0,
        reduction="add",
    )
    return [ctx.reshape_like(scattered, x)]


@vjp("AveragePool")
def average_pool(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x = node.input(0)
    win, input_dims, output_dims, channels = _pool_geometry(ctx, node)
    divisors = _divisors(win, input_dims, output_dims, include_pad=bool(node.attrs.get("count_include_pad", 0)))
    scaled = ctx.op("Mul", [grads[0], ctx.constant(1.0 / divisors, like=x, hint="pool_weights")])
    return [_spread(ctx, scaled, x, win, input_dims, output_dims, channels)]


@vjp("LpPool")
def lp_pool(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Each window's p-norm: g·y^(1-p) spread over the window, times sign(x)·|x|^(p-1)."""
    x, p = node.input(0), node.attrs.get("p", 2)
    win, input_dims, output_dims, channels = _pool_geometry(ctx, node)
    outer = _norm.output_factor(ctx, grads[0], node.outputs[0], p, like=x)
    spread = _spread(ctx, outer, x, win, input_dims, output_dims, channels)
    return [ctx.op("Mul", [spread, _norm.input_factor(ctx, x, p)])]


@vjp("GlobalAveragePool")
def global_average_pool(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x = node.input(0)
    area = math.prod(spatial_dims(ctx, x))
    return [ctx.expand_like(ctx.op("Mul", [grads[0], ctx.scalar(1.0 / area, like=x)]), x)]


@vjp("GlobalLpPool")
def global_lp_pool(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x, p = node.input(0), node.attrs.get("p", 2)
    outer = _norm.output_factor(ctx, grads[0], node.outputs[0], p, like=x)
    return [ctx.op("Mul", [outer, _norm.input_factor(ctx, x, p)])]


@vjp("GlobalMaxPool")
def global_max_pool(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """g goes to every element equal to its channel's maximum (ties each get all of it; torch picks one). The
    mask is "not below the maximum", as Equal-19 has no CUDA kernel."""
    x, y = node.input(0), node.outputs[0]
    below_max = ctx.op("Less", [x, y])
    return [ctx.op("Where", [below_max, ctx.scalar(0.0, like=x), grads[0]])]


def _pool_geometry(ctx: BackwardContext, node: ForwardNode) -> tuple[Window, tuple[int, ...], tuple[int, ...], int]:
    """The window, input and output spatial sizes and channel count of an AveragePool or LpPool."""
    x = node.input(0)
    input_dims = spatial_dims(ctx, x)
    channels = ctx.shape(x)[1]  # type: ignore[index]
    if channels is None:
        raise UnknownShape(x, ctx.shape(x))
    win = window(node.attrs, input_dims, node.attrs["kernel_shape"])
    output_dims = win.output_dims(input_dims, ceil_mode=bool(node.attrs.get("ceil_mode", 0)))
    inferred = ctx.shape(node.outputs[0])
    if inferred is not None and None not in inferred[2:] and tuple(inferred[2:]) != output_dims:
        # ceil_mode with a last window starting in the end padding: ONNX shape inference keeps that window, ONNX
        # Runtime drops it, so the gradient's declared and actual shapes differ.
        raise NotImplementedError(
            f"ONNX shape inference gives output {list(inferred[2:])}, ONNX Runtime {list(output_dims)} (ceil_mode)"
        )
    return win, input_dims, output_dims, channels


def _spread(
    ctx: BackwardContext,
    grad: str,
    x: str,
    win: Window,
    input_dims: Sequence[int],
    output_dims: Sequence[int],
    channels: int,
) -> str:
    """Each window's gradient added onto every input element of the window."""
    ones = ctx.constant(np.ones((channels, 1, *win.kernel)), like=x, hint="pool_window")
    return transposed_window_sum(ctx, grad, ones, win, input_dims, output_dims, group=channels)


def _flat_zeros(ctx: BackwardContext, like: str) -> str:
    """Zeros with as many elements as `like`, in one axis: from a constant length when the shape is static, else
    from the runtime shape (a symbolic batch)."""
    shape = ctx.shape(like)
    if shape is not None and all(d is not None for d in shape):
        return ctx.op("Expand", [ctx.scalar(0.0, like=like), ctx.ints([math.prod(shape)])])  # type: ignore[arg-type]
    return ctx.op("Reshape", [ctx.zeros_like(like), ctx.ints([-1])])


def _divisors(win: Window, input_dims: Sequence[int], output_dims: Sequence[int], include_pad: bool) -> np.ndarray:
    """Each output position's divisor: the taps of its window that fall inside the input (count_include_pad=0) or
    inside the padded input (1; windows that ceil_mode lets run past the end padding do not count those taps)."""
    counts = []
    for axis, (size, count) in enumerate(zip(input_dims, output_dims, strict=True)):
        starts = np.arange(count) * win.strides[axis] - win.begins[axis]
        taps = starts[:, None] + np.arange(win.kernel[axis]) * win.dilations[axis]
        low, high = (-win.begins[axis], size + win.ends[axis]) if include_pad else (0, size)
        counts.append(((taps >= low) & (taps < high)).sum(axis=1))
    return np.maximum(functools.reduce(np.multiply.outer, counts), 1).astype(np.float64)
