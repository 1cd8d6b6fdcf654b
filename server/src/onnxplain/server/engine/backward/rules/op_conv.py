"""VJP rule: Conv. The input gradient is the transposed convolution of g with the same weight (Conv's
[M, C/group, k…] layout is ConvTranspose's [C_in, C_out/group, k…]), strides, dilations and group.

For stride 1 with a constant weight it is a plain Conv of g with the weight flipped and transposed per group instead:
ONNX Runtime's CPU ConvTranspose is far slower for depthwise and k>1 kernels (measured at batch 16: 3-20x for
depthwise, about 2x for dense 3x3; bench/RESULTS.md). Dense 1x1 kernels keep ConvTranspose, where neither won."""

from __future__ import annotations

import numpy as np

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules._spatial import Window, crop, spatial_dims, transposed_window_sum, window
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("Conv")
def conv(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    weight, bias = node.input(1), node.input(2)
    for parameter in (weight, bias):
        if parameter and ctx.needs(parameter):
            raise NotImplementedError(f"the gradient of Conv parameter {parameter!r} (only the input's is built)")
    return [conv_input_vjp(ctx, node, grads[0], weight), None, None]


def conv_input_vjp(ctx: BackwardContext, node: ForwardNode, grad: str, weight: str) -> str:
    """gᵀ·∂Conv/∂x for Conv `node` run with `weight` (LRP rules pass a modified weight here)."""
    input_dims = spatial_dims(ctx, node.input(0))
    kernel = node.attrs.get("kernel_shape") or spatial_dims(ctx, weight)
    win = window(node.attrs, input_dims, kernel)
    group = int(node.attrs.get("group", 1))
    value = ctx.value(weight)
    pointwise = group == 1 and all(k == 1 for k in kernel)
    if value is not None and not pointwise and all(s == 1 for s in win.strides):
        begins = [win.extent(i) - 1 - win.begins[i] for i in range(len(kernel))]
        ends = [win.extent(i) - 1 - win.ends[i] for i in range(len(kernel))]
        if min(begins + ends) >= 0:
            return _flipped_conv(ctx, grad, value, win, group, begins, ends, input_dims)
    return transposed_window_sum(ctx, grad, weight, win, input_dims, win.output_dims(input_dims), group)


def _flipped_conv(
    ctx: BackwardContext,
    grad: str,
    weight: np.ndarray,
    win: Window,
    group: int,
    begins: list[int],
    ends: list[int],
    input_dims: tuple[int, ...],
) -> str:
    """The stride-1 input gradient as Conv(g, W'), W' the weight transposed per group and flipped spatially, padded
    by extent - 1 - pad. Pads are made symmetric (the larger of the two) and the excess cropped: the CUDA provider
    runs symmetric pads on the GPU."""
    filters, per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    grouped = weight.reshape(group, filters // group, per_group, *kernel).swapaxes(1, 2)
    flipped = grouped.reshape(group * per_group, filters // group, *kernel)[
        (slice(None), slice(None), *[slice(None, None, -1)] * len(kernel))
    ]
    pads = [max(b, e) for b, e in zip(begins, ends, strict=True)]
    summed = ctx.op(
        "Conv",
        [grad, ctx.constant(np.ascontiguousarray(flipped), hint="flipped_weight")],
        dilations=list(win.dilations),
        group=group,
        pads=pads + pads,
    )
    full = [size + 2 * pad - (b + e) for size, pad, b, e in zip(input_dims, pads, begins, ends, strict=True)]
    return crop(ctx, summed, [pad - b for pad, b in zip(pads, begins, strict=True)], input_dims, full)
