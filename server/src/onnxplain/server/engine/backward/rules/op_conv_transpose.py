"""VJP rule: ConvTranspose. It is the adjoint of a Conv with the same weight, strides, dilations and group, so its
input gradient is that Conv applied to g, with the pads ConvTranspose cropped restored as Conv pads."""

from __future__ import annotations

from collections.abc import Sequence

from onnxplain.server.engine.backward.context import BackwardContext
from onnxplain.server.engine.backward.rules._spatial import crop, spatial_dims
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("ConvTranspose")
def conv_transpose(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    weight, bias = node.input(1), node.input(2)
    for parameter in (weight, bias):
        if parameter and ctx.needs(parameter):
            raise NotImplementedError(
                f"the gradient of ConvTranspose parameter {parameter!r} (only the input's is built)"
            )
    input_dims = spatial_dims(ctx, node.input(0))
    rank = len(input_dims)
    kernel = node.attrs.get("kernel_shape") or spatial_dims(ctx, weight)
    strides = node.attrs.get("strides") or [1] * rank
    dilations = node.attrs.get("dilations") or [1] * rank
    output_padding = node.attrs.get("output_padding") or [0] * rank
    # The extent before ConvTranspose crops its pads: every window placed, plus output_padding at the end.
    full = [
        s * (n - 1) + p + d * (k - 1) + 1
        for n, p, d, k, s in zip(input_dims, output_padding, dilations, kernel, strides, strict=True)
    ]
    begins, ends = _pads(node.attrs, input_dims, full)
    grad = ctx.op(
        "Conv",
        [grads[0], weight],
        strides=list(strides),
        dilations=list(dilations),
        group=int(node.attrs.get("group", 1)),
        pads=[*begins, *ends],
    )
    # output_padding ≥ stride adds whole windows past the input's end: they read only padding, crop them off.
    dims = [n + p // s for n, p, s in zip(input_dims, output_padding, strides, strict=True)]
    return [crop(ctx, grad, [0] * rank, input_dims, dims), None, None]


def _pads(attrs: dict, input_dims: Sequence[int], full: Sequence[int]) -> tuple[list[int], list[int]]:
    """The pads ConvTranspose crops from the full extent, resolved from output_shape and auto_pad the way ONNX
    Runtime resolves them: explicit pads are ignored when output_shape is given, and SAME_UPPER crops the odd
    element at the end, everything else at the start."""
    rank = len(input_dims)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if attrs.get("output_shape"):
        outputs = list(attrs["output_shape"])[-rank:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        outputs = [n * s for n, s in zip(input_dims, attrs.get("strides") or [1] * rank, strict=True)]
    elif auto_pad == "VALID":
        return [0] * rank, [0] * rank
    else:
        pads = list(attrs.get("pads") or [0] * (2 * rank))
        return pads[:rank], pads[rank:]
    totals = [f - o for f, o in zip(full, outputs, strict=True)]
    if any(t < 0 for t in totals):
        raise NotImplementedError(f"ConvTranspose output {outputs} larger than its full extent {list(full)}")
    small = [t // 2 for t in totals]
    large = [t - t // 2 for t in totals]
    if auto_pad == "SAME_UPPER":
        return small, large
    return large, small
