"""VJP rule: Resize. Every Resize mode is linear in X and separable over the axes, so the input gradient is g
multiplied on each resized axis by the transposed interpolation matrix A [out, in]: dX = A_hᵀ·g·A_w.

The matrices are measured rather than re-derived: at build time ONNX Runtime runs the node's own Resize (same
attributes, same opset) on an identity basis, one axis at a time, so nearest rounding, coordinate transforms,
cubic coefficients, exclude_outside and antialias all match the forward exactly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from onnxplain.server.engine.backward.context import BackwardContext, UnknownShape
from onnxplain.server.engine.backward.rules.registry import ForwardNode, Gradients, vjp

# Attributes that the probe replaces: it passes full-rank scales or sizes of its own.
_PROBE_DROPS = {"axes", "keep_aspect_ratio_policy"}


@vjp("Resize")
def resize(ctx: BackwardContext, node: ForwardNode, grads: Gradients) -> list[str | None]:
    x = node.input(0)
    if node.attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise NotImplementedError("Resize with tf_crop_and_resize (extrapolated values are not separable)")
    if node.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise NotImplementedError("Resize with keep_aspect_ratio_policy (its scale couples the axes)")
    shape = ctx.shape(x)
    if shape is None or len(shape) < 3:
        raise NotImplementedError(f"Resize of a rank-{len(shape or ())} tensor (only [N, C, …] images)")
    kind, targets = _targets(ctx, node, shape)
    resized = [axis for axis in range(len(shape)) if not _untouched(kind, targets[axis], shape[axis])]
    allowed = range(max(2, len(shape) - 2), len(shape))
    if any(axis not in allowed for axis in resized):
        raise NotImplementedError(f"Resize of axes {resized}: only the two last axes, N and C untouched")
    grad = grads[0]
    for axis in resized:
        size = shape[axis]
        if size is None:
            raise UnknownShape(x, shape)
        matrix = _interpolation_matrix(ctx, node, kind, targets[axis], axis, len(shape), size)
        if axis == len(shape) - 1:
            grad = ctx.op("MatMul", [grad, ctx.constant(matrix, like=x, hint="resize_matrix")])
        else:
            grad = ctx.op("MatMul", [ctx.constant(matrix.T, like=x, hint="resize_matrix"), grad])
    return [grad, None, None, None]


def _targets(ctx: BackwardContext, node: ForwardNode, shape: Sequence[int | None]) -> tuple[str, list]:
    """("scales", one scale per axis) or ("sizes", one output size per axis), read from the constant scales or sizes
    input (over the `axes` attribute when present), or the inferred output shape when sizes are computed at run time."""
    rank = len(shape)
    axes = [a % rank for a in node.attrs.get("axes") or range(rank)]
    scales, sizes = ctx.value(node.input(2)), ctx.value(node.input(3))
    if scales is not None and scales.size:
        full = [1.0] * rank
        for axis, scale in zip(axes, scales.tolist(), strict=True):
            full[axis] = scale
        return "scales", full
    if sizes is not None and sizes.size:
        full_sizes = list(shape)
        for axis, size in zip(axes, sizes.tolist(), strict=True):
            full_sizes[axis] = size
        return "sizes", full_sizes
    inferred = ctx.shape(node.outputs[0])
    if node.input(3) and inferred is not None and len(inferred) == rank:
        return "sizes", list(inferred)
    raise NotImplementedError("Resize whose scales are computed at run time")


def _untouched(kind: str, target: float | int | None, size: int | None) -> bool:
    return target == 1.0 if kind == "scales" else target == size


def _interpolation_matrix(
    ctx: BackwardContext, node: ForwardNode, kind: str, target: float | int, axis: int, rank: int, size: int
) -> np.ndarray:
    """A [out, in] for one axis: the node's Resize run on the `size` basis vectors of that axis, stacked along the
    batch axis, every other axis of length 1 and left alone."""
    probe_shape = [1] * rank
    probe_shape[0] = probe_shape[axis] = size
    basis = np.eye(size, dtype=np.float32).reshape(probe_shape)
    if kind == "scales":
        values = np.ones(rank, np.float32)
        values[axis] = target
    else:
        values = np.asarray(probe_shape, np.int64)
        values[axis] = target
    resized = _run_probe(node, ctx.opset, basis, kind, values)
    return resized.reshape(size, -1).T.astype(np.float64)


def _run_probe(node: ForwardNode, opset: int, basis: np.ndarray, kind: str, values: np.ndarray) -> np.ndarray:
    attributes = [attr for attr in node.proto.attribute if attr.name not in _PROBE_DROPS]
    inputs = ["x", "", "target", ""] if kind == "scales" else ["x", "", "", "target"]
    probe = helper.make_node("Resize", inputs, ["y"])
    probe.attribute.extend(attributes)
    graph = helper.make_graph(
        [probe],
        "resize_probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, basis.shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(values, "target")],
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": basis})[0]
