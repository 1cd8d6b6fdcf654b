"""VJP rule: Conv. The input gradient is the transposed convolution of g with the same weight (Conv's
[M, C/group, k…] layout is ConvTranspose's [C_in, C_out/group, k…]), strides, dilations and group."""

from __future__ import annotations

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules._spatial import spatial_dims, transposed_window_sum, window
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
    return transposed_window_sum(ctx, grad, weight, win, input_dims, win.output_dims(input_dims), group)
