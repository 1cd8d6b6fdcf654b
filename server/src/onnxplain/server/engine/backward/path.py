"""Which nodes lie between the tensors we differentiate with respect to and the target: only those get rules."""

from __future__ import annotations

from collections.abc import Iterable

import onnx

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def differentiable_path(
    graph: onnx.GraphProto, sources: Iterable[str], target: str, dtypes: dict[str, int]
) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes on a float path from any source to the target, in graph (topological) order, and the float tensors
    on those paths. Integer shape subgraphs and constants fall outside and are never differentiated."""
    downstream = set(sources)
    for node in graph.node:
        if any(name in downstream for name in node.input if name):
            downstream.update(out for out in node.output if out and _is_float(out, dtypes))
    upstream = {target}
    for node in reversed(graph.node):
        if any(out in upstream for out in node.output):
            upstream.update(name for name in node.input if name)
    on_path = downstream & upstream
    nodes = [
        node
        for node in graph.node
        if any(out in on_path for out in node.output) and any(name in on_path for name in node.input)
    ]
    return nodes, on_path


def _is_float(name: str, dtypes: dict[str, int]) -> bool:
    # Unknown types are taken as float: a missing rule then says so, rather than a gradient silently vanishing.
    return dtypes.get(name, onnx.TensorProto.FLOAT) in _FLOAT_TYPES
