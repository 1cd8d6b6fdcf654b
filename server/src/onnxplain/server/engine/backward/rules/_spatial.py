"""Window geometry shared by the Conv, ConvTranspose and pooling rules: ONNX attribute defaults, auto_pad resolved
to explicit pads the way ONNX Runtime resolves them, and the transposed window sum that carries window gradients
back onto the input.

The transposed window sum is a ConvTranspose with pads=0 onto the padded extent, then a Slice that drops the pads:
exact for asymmetric pads, and the form the CUDA provider runs on the GPU (it sends ConvTranspose with asymmetric
pads to the CPU, and `output_shape` would make ONNX Runtime re-derive the pads; onnx-backward.md §4.2, §6)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onnxplain.server.engine.backward.context import BackwardContext, UnknownShape


@dataclass(frozen=True)
class Window:
    """A sliding window over the spatial axes, with explicit pads at the beginning and the end of each axis."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begins: tuple[int, ...]
    ends: tuple[int, ...]

    def extent(self, axis: int) -> int:
        """The span of one dilated window along `axis`."""
        return self.dilations[axis] * (self.kernel[axis] - 1) + 1

    def output_dims(self, input_dims: Sequence[int], ceil_mode: bool = False) -> tuple[int, ...]:
        """The output size ONNX Runtime gives: with ceil_mode, a last window that would start in the end padding is
        dropped (as in PyTorch; ONNX shape inference keeps it, so the inferred shape cannot be trusted there)."""
        dims = []
        for axis, size in enumerate(input_dims):
            span = size + self.begins[axis] + self.ends[axis] - self.extent(axis)
            rounding = math.ceil if ceil_mode else math.floor
            count = rounding(span / self.strides[axis]) + 1
            if ceil_mode and (count - 1) * self.strides[axis] >= size + self.begins[axis]:
                count -= 1
            dims.append(count)
        return tuple(dims)


def spatial_dims(ctx: BackwardContext, name: str) -> tuple[int, ...]:
    """The static sizes of the axes after batch and channel; every spatial rule needs them."""
    shape = ctx.shape(name)
    if shape is None or len(shape) < 3 or any(d is None for d in shape[2:]):
        raise UnknownShape(name, shape)
    return tuple(int(d) for d in shape[2:])  # type: ignore[arg-type]


def window(attrs: Mapping[str, Any], input_dims: Sequence[int], kernel: Sequence[int]) -> Window:
    """The window of a Conv or pooling node, with ONNX defaults filled in and auto_pad resolved to explicit pads."""
    rank = len(input_dims)
    strides = tuple(attrs.get("strides") or [1] * rank)
    dilations = tuple(attrs.get("dilations") or [1] * rank)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = _same_pads(auto_pad, input_dims, kernel, strides, dilations)
    elif auto_pad == "VALID":
        begins = ends = (0,) * rank
    else:
        pads = tuple(attrs.get("pads") or [0] * (2 * rank))
        begins, ends = pads[:rank], pads[rank:]
    return Window(tuple(kernel), strides, dilations, tuple(begins), tuple(ends))


def _same_pads(
    auto_pad: str, input_dims: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """SAME padding: output = ceil(input / stride); SAME_UPPER puts the odd pad at the end, SAME_LOWER at the start."""
    if any(d != 1 for d in dilations):
        # ONNX Runtime rejects it for Conv and computes the pads from the undilated kernel for pools.
        raise NotImplementedError(f"auto_pad={auto_pad} with dilations {list(dilations)}")
    begins, ends = [], []
    for size, k, s in zip(input_dims, kernel, strides, strict=True):
        total = (math.ceil(size / s) - 1) * s + k - size
        if total < -1:
            # A kernel smaller than the stride: ONNX Runtime's kernels disagree on where the negative pad goes.
            raise NotImplementedError(f"auto_pad={auto_pad} with kernel {k} < stride {s} on size {size}")
        total = max(total, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return tuple(begins), tuple(ends)


def transposed_window_sum(
    ctx: BackwardContext,
    grad: str,
    weight: str,
    win: Window,
    input_dims: Sequence[int],
    output_dims: Sequence[int],
    group: int,
) -> str:
    """Σ over windows of grad·weight placed back at each window's taps: ConvTranspose (pads 0) onto the padded
    extent, with output_padding where the last windows stop short of the input's end, then a Slice to the input."""
    rank = len(input_dims)
    spans = [win.strides[i] * (output_dims[i] - 1) + win.extent(i) for i in range(rank)]
    output_padding = [max(0, win.begins[i] + input_dims[i] - spans[i]) for i in range(rank)]
    summed = ctx.op(
        "ConvTranspose",
        [grad, weight],
        strides=list(win.strides),
        dilations=list(win.dilations),
        group=group,
        pads=[0] * (2 * rank),
        output_padding=output_padding,
    )
    full = [spans[i] + output_padding[i] for i in range(rank)]
    return crop(ctx, summed, win.begins, input_dims, full)


def crop(ctx: BackwardContext, tensor: str, begins: Sequence[int], sizes: Sequence[int], dims: Sequence[int]) -> str:
    """`tensor` (spatial sizes `dims`) restricted to `sizes` elements from `begins` on each spatial axis; no node
    when that is all of it."""
    if list(begins) == [0] * len(begins) and list(sizes) == list(dims):
        return tensor
    axes = list(range(2, 2 + len(sizes)))
    ends = [b + n for b, n in zip(begins, sizes, strict=True)]
    return ctx.op("Slice", [tensor, ctx.ints(begins), ctx.ints(ends), ctx.ints(axes)])
