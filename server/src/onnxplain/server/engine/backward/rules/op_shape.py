"""VJP rules of the ops that move, copy or pick elements without arithmetic: reshapes, Transpose, Concat/Split,
Slice, Pad, Gather, Expand, Tile, and the pass-through ops (Identity, Dropout at inference, Cast between floats).

Slice, Pad and Gather copy input elements along an axis through an index map known at build time. Their VJP is
built from Gather (with constant indices) and Where (with a constant mask), which the CUDA provider runs at every
opset, rather than from Pad (Pad-18 and later fall back to the CPU) or from zero blocks (whose shape would need the
runtime batch size).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnxplain.server.engine.backward.context import BackwardContext, UnknownShape
from onnxplain.server.engine.backward.rules._static import constant, constant_ints, normalized_axes, static_dims
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp


@vjp("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def reshape(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Same elements, another shape: the gradient takes the input's shape back."""
    return [ctx.reshape_like(grads[0], node.input(0))]


@vjp("Identity")
def identity(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [grads[0]]


@vjp("Dropout")
def dropout(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """At inference Dropout passes its input through (the mask output is boolean, never differentiated)."""
    if node.input(2) and constant(ctx, node.input(2), "Dropout training_mode").any():
        raise NotImplementedError("Dropout in training mode is random; only inference graphs are supported")
    return [grads[0]]


@vjp("Cast")
def cast(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """A cast between float types: the gradient is cast back to the input's type (no node when the type is
    unchanged). Casts from or to integers are never on the differentiable path."""
    source = helper.np_dtype_to_tensor_dtype(ctx.dtype(node.input(0)))
    if source == node.attrs["to"]:
        return [grads[0]]
    return [ctx.op("Cast", [grads[0]], to=source)]


@vjp("Transpose")
def transpose(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    rank = ctx.rank(node.input(0))
    perm = node.attrs.get("perm", list(reversed(range(rank))))  # no perm: all axes reversed
    return [ctx.op("Transpose", [grads[0]], perm=[int(axis) for axis in np.argsort(perm)])]


@vjp("Expand")
def expand(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    return [ctx.unbroadcast(grads[0], node.input(0), node.outputs[0]), None]


@vjp("Tile")
def tile(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Each repeated axis of the output is split into (repeat, size) and the repeat axis summed away."""
    x = node.input(0)
    shape = ctx.shape(x)
    if shape is None:
        raise UnknownShape(x, shape)
    repeats = constant_ints(ctx, node.input(1), "Tile repeats")
    split: list[int | None] = []
    summed: list[int] = []
    for axis, (size, repeat) in enumerate(zip(shape, repeats, strict=True)):
        if repeat != 1:
            summed.append(len(split))
            split.append(repeat)
            size = static_dims(ctx, x, [axis])[0]
        split.append(size)
    return [ctx.reduce_sum(_reshaped(ctx, grads[0], split), summed, keepdims=False), None]


@vjp("Concat")
def concat(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Each needed input gets its own Slice of the gradient along the axis (static sizes)."""
    axis = node.attrs["axis"] % ctx.rank(node.outputs[0])
    parts: list[str | None] = []
    offset = 0
    for name in node.inputs:
        size = static_dims(ctx, name, [axis])[0]
        needed = ctx.needs(name)
        parts.append(_slice(ctx, grads[0], axis, offset, offset + size) if needed else None)
        offset += size
    return parts


@vjp("Split")
def split(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """The output gradients concatenated back, zeros for outputs nothing differentiates. The outputs' inferred
    shapes stand for the split sizes, whichever form (attribute, input, num_outputs, equal parts) gave them."""
    axis = node.attrs.get("axis", 0)
    parts = [ctx.zeros_like(out) if grad is None else grad for out, grad in zip(node.outputs, grads, strict=True)]
    return [ctx.sum(parts) if len(parts) == 1 else ctx.op("Concat", parts, axis=axis), None]


@vjp("Slice")
def slice_(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Negative starts/ends, clamping, axes and steps (negative too) follow Python's slice semantics, as ONNX's."""
    data = node.input(0)
    rank = ctx.rank(data)
    starts = constant_ints(ctx, node.input(1), "Slice starts")
    ends = constant_ints(ctx, node.input(2), "Slice ends")
    axes = constant_ints(ctx, node.input(3), "Slice axes") if node.input(3) else range(len(starts))
    steps = constant_ints(ctx, node.input(4), "Slice steps") if node.input(4) else [1] * len(starts)
    grad = grads[0]
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        axis %= rank
        size = static_dims(ctx, data, [axis])[0]
        grad = _read_back(ctx, grad, axis, rank, np.arange(size)[start:end:step], size, like=data)
    return [grad]


@vjp("Pad")
def pad(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Constant pads (negative ones crop), and reflect/edge/wrap pads, whose border gradients add up on the
    input elements they copy."""
    data = node.input(0)
    rank = ctx.rank(data)
    mode = node.attrs.get("mode", "constant")
    pads = constant_ints(ctx, node.input(1), "Pad pads")
    axes = normalized_axes(constant_ints(ctx, node.input(3), "Pad axes"), rank) if node.input(3) else range(rank)
    count = len(pads) // 2
    grad = grads[0]
    for axis, begin, end in zip(axes, pads[:count], pads[count:], strict=True):
        if begin == end == 0:  # an axis left as it is: often the batch, whose size is not known
            continue
        size = static_dims(ctx, data, [axis])[0]
        grad = _read_back(ctx, grad, axis, rank, _pad_sources(mode, size, begin, end), size, like=data)
    return [grad]


@vjp("Gather")
def gather(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    """Gather of float data at constant indices (a ViT's class token): index dimensions are flattened into one,
    then each input index sums the gradients of the outputs that read it (repeated indices included). Indices
    computed at run time, or an axis whose size is not static, take the scatter form (_scattered_back)."""
    data, indices = node.input(0), node.input(1)
    shape = ctx.shape(data)
    if shape is None:
        raise UnknownShape(data, shape)
    rank = len(shape)
    axis = node.attrs.get("axis", 0) % rank
    index = ctx.value(indices)
    if index is None or shape[axis] is None:
        return [_scattered_back(ctx, grads[0], data, indices, axis, rank), None]
    size = int(shape[axis])
    grad = grads[0]
    if index.ndim != 1:
        grad = _reshaped(ctx, grad, [*shape[:axis], index.size, *shape[axis + 1 :]])
    return [_read_back(ctx, grad, axis, rank, index.reshape(-1) % size, size, like=data), None]


def _scattered_back(ctx: BackwardContext, grad: str, data: str, indices: str, axis: int, rank: int) -> str:
    """The VJP of a Gather whose indices are computed at run time (the dynamo exporter writes an `as_strided` as a
    Gather from the flattened activation at indices built from the batch size): the gradient's index dimensions
    flattened into one, added into zeros shaped like the data at the indices by ScatterElements (negative indices
    count from the end there as in Gather)."""
    rows_shape = ctx.op(
        "Concat", [ctx.op("Shape", [data], end=axis), ctx.ints([-1]), ctx.op("Shape", [data], start=axis + 1)], axis=0
    )
    rows = ctx.op("Reshape", [grad, rows_shape])
    flat_indices = ctx.op("Reshape", [indices, ctx.ints([1] * axis + [-1] + [1] * (rank - axis - 1))])
    spread = ctx.op("Expand", [flat_indices, ctx.op("Shape", [rows])])
    return ctx.op("ScatterElements", [ctx.zeros_like(data), spread, rows], axis=axis, reduction="add")


def _read_back(ctx: BackwardContext, grad: str, axis: int, rank: int, sources: np.ndarray, size: int, like: str) -> str:
    """The VJP of a copy along `axis` where output index j reads input index sources[j] (-1: a pad constant, no
    input) and the input has `size` indices there. Each input index sums the gradients of the outputs that read
    it: one Gather per layer of repeated reads (a slice or constant pad has one layer, reflect/edge pads and
    repeated Gather indices more), masked by Where where an input index has no read in that layer."""
    if np.array_equal(sources, np.arange(size)):
        return grad
    readers = [np.flatnonzero(sources == i) for i in range(size)]
    layers = max(len(reads) for reads in readers)
    if layers == 0:
        raise NotImplementedError("no element of the input reaches the output")
    terms = []
    for layer in range(layers):
        read = np.array([len(reads) > layer for reads in readers])
        index = [reads[layer] if len(reads) > layer else 0 for reads in readers]
        term = ctx.op("Gather", [grad, ctx.ints(index)], axis=axis)
        if not read.all():
            mask = ctx.constant(read.reshape(-1, *[1] * (rank - 1 - axis)), hint="mask")
            term = ctx.op("Where", [mask, term, ctx.scalar(0.0, like)])
        terms.append(term)
    return ctx.sum(terms)


def _pad_sources(mode: str, size: int, begin: int, end: int) -> np.ndarray:
    """For each output index of a Pad along one axis, the input index it copies (-1: the constant)."""
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise NotImplementedError(f"Pad mode {mode!r}")
    if mode != "constant" and min(begin, end) < 0:
        raise NotImplementedError(f"Pad mode {mode!r} with negative (cropping) pads")
    fill = {"constant_values": -1} if mode == "constant" else {}
    sources = np.pad(np.arange(size), (max(begin, 0), max(end, 0)), mode=mode, **fill)  # ONNX's modes are NumPy's
    return sources[max(-begin, 0) : len(sources) - max(-end, 0)]


def _slice(ctx: BackwardContext, grad: str, axis: int, start: int, end: int) -> str:
    return ctx.op("Slice", [grad, ctx.ints([start]), ctx.ints([end]), ctx.ints([axis])])


def _reshaped(ctx: BackwardContext, grad: str, dims: list[int | None]) -> str:
    """`grad` reshaped to `dims`, where one unknown dimension (the batch) may be None."""
    if sum(d is None for d in dims) > 1:
        raise UnknownShape(grad, tuple(dims))
    return ctx.op("Reshape", [grad, ctx.ints([-1 if d is None else d for d in dims])])
