"""Backward graphs compute in float32 whatever precision the model runs in.

A float16 (or bfloat16, or float64) model's backward graph is built on a float32 copy of its graph: the CPU provider
has no float16 kernels for ops the rules emit (ScatterElements with a reduction, the MaxPool VJP), float16 VJPs of
deep models lose most of their digits, and every method then feeds one dtype. The weights are the model's own
(float16 values are exact in float32), so the maps agree with the float16 model's to its precision; the scores the
backward graph computes on the way are float32 scores of the same weights.

An integer image input (uint8 pixels with the preprocessing inside the graph) becomes a float32 input: the gradient
is taken with respect to the pixels treated as continuous, and flows back through the graph's Cast and normalisation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxplain.server.engine.backward.graph import subgraphs

_OTHER_FLOATS = {TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_INTEGERS = {
    TensorProto.UINT8,
    TensorProto.INT8,
    TensorProto.UINT16,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
}
# Attributes naming an element type (Cast's `to`, the Random* ops' and EyeLike's `dtype`).
_TYPE_ATTRIBUTES = {"to", "dtype"}


def as_float32(model: onnx.ModelProto, input_name: str) -> None:
    """Rewrite the model in place to compute in float32, with a float32 image input."""
    for graph in _graphs(model.graph):
        for index, initializer in enumerate(graph.initializer):
            if initializer.data_type in _OTHER_FLOATS:
                graph.initializer[index].CopyFrom(_float32_tensor(initializer))
        for node in graph.node:
            for attribute in node.attribute:
                _retype(attribute)
        for value in (*graph.input, *graph.output, *graph.value_info):
            tensor_type = value.type.tensor_type
            integer_image = value.name == input_name and tensor_type.elem_type in _INTEGERS
            if tensor_type.elem_type in _OTHER_FLOATS or integer_image:
                tensor_type.elem_type = TensorProto.FLOAT


def _retype(attribute: onnx.AttributeProto) -> None:
    if attribute.name in _TYPE_ATTRIBUTES and attribute.type == onnx.AttributeProto.INT:
        if attribute.i in _OTHER_FLOATS:
            attribute.i = TensorProto.FLOAT
    elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in _OTHER_FLOATS:
        attribute.t.CopyFrom(_float32_tensor(attribute.t))


def _float32_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and its subgraphs (If branches, Loop bodies), nested ones included."""
    yield graph
    for node in graph.node:
        for subgraph in subgraphs(node):
            yield from _graphs(subgraph)
