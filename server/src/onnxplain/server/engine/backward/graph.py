"""Pieces several graph steps share: a model's opset, fresh names for the nodes a step adds, a node's subgraphs, every
tensor a model holds."""

from __future__ import annotations

from collections.abc import Iterator

import onnx


def model_opset(model: onnx.ModelProto) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 1)


class FreshNames:
    """Names no tensor, node or initializer of the graph has yet, under a prefix, for the nodes a step adds."""

    def __init__(self, graph: onnx.GraphProto, prefix: str) -> None:
        self._prefix = prefix
        self._taken = {name for node in graph.node for name in (*node.input, *node.output, node.name)}
        self._taken |= {init.name for init in graph.initializer} | {value.name for value in graph.input}
        self._counter = 0

    def __call__(self, hint: str) -> str:
        while True:
            self._counter += 1
            name = f"{self._prefix}/{hint}_{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The node's subgraphs (an If's branches, a Loop's or Scan's body), not those nested inside them."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers, sparse initializers and tensor attributes, in the main graph, every subgraph and every function:
    wherever ONNX Runtime may look for external data."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
        for sparse in attribute.sparse_tensors:
            yield from (sparse.values, sparse.indices)
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)
