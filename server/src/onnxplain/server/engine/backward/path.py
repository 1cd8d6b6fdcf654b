"""Which nodes lie between the tensors we differentiate with respect to and the target: only those get rules."""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from onnxplain.server.engine.backward.graph import subgraphs

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
# Standard ops whose integer outputs still carry their input's signal: quantized activations, which the
# straight-through estimator differentiates (rules/op_quantize.py), and the integer ops that quantized.py rewrites.
_QUANTIZED_OUTPUT_OPS = {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def differentiable_path(
    graph: onnx.GraphProto, sources: Iterable[str], target: str, dtypes: dict[str, int]
) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes on a float path from any source to the target, in graph (topological) order, and the float tensors
    on those paths. Integer shape subgraphs and constants fall outside and are never differentiated; quantized
    integer tensors stay on the path (see _differentiable_outputs)."""
    downstream = set(sources)
    for node in graph.node:
        if any(name in downstream for name in _reads(node)):
            downstream.update(_differentiable_outputs(node, dtypes))
    upstream = {target}
    for node in reversed(graph.node):
        if any(out in upstream for out in node.output):
            upstream.update(_reads(node))
    on_path = downstream & upstream
    nodes = [
        node
        for node in graph.node
        if any(out in on_path for out in node.output) and any(name in on_path for name in _reads(node))
    ]
    return nodes, on_path


def _reads(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads: its inputs, and the outer tensors its subgraphs (If branches, Loop bodies) use by
    name. An If on the input's path has no rule; without these it would look off the path and be missed."""
    names = {name for name in node.input if name}
    for graph in subgraphs(node):
        names |= _outer_names(graph)
    return names


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    defined = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    used = set()
    for node in graph.node:
        used |= _reads(node)
        defined.update(node.output)
    return used - defined


def _differentiable_outputs(node: onnx.NodeProto, dtypes: dict[str, int]) -> list[str]:
    """The outputs a gradient can flow back from. DynamicQuantizeLinear's scale and zero point are constants to the
    straight-through estimator. Ops of other domains (com.microsoft's QLinearAdd...) count whatever their types, so
    a missing rule names them instead of the path silently ending there."""
    if node.op_type == "DynamicQuantizeLinear":
        return [node.output[0]]
    if node.op_type in _QUANTIZED_OUTPUT_OPS or node.domain not in ("", "ai.onnx"):
        return [out for out in node.output if out]
    return [out for out in node.output if out and _is_float(out, dtypes)]


def _is_float(name: str, dtypes: dict[str, int]) -> bool:
    # Unknown types are taken as float: a missing rule then says so, rather than a gradient silently vanishing.
    return dtypes.get(name, onnx.TensorProto.FLOAT) in _FLOAT_TYPES
