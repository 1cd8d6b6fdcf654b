"""Pieces several graph steps share: a model's opset, fresh names for the nodes a step adds, a node's subgraphs."""

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
