"""The learned layers of an ONNX graph, top-down, and copies of the graph with some of them redrawn at random: the
graph surgery behind the model-parameter randomisation sanity check (Adebayo et al., NeurIPS 2018).

Layers are the nodes that carry learned weights in every classifier: Conv, ConvTranspose, Gemm and MatMul with a
weight stored in the graph (Adebayo randomise the convolutional and fully connected weights and biases).
BatchNormalization is left out on purpose: both torch exporters and tf2onnx fold it into the convolution before it
when the model is in inference mode, so whether a model has BN parameters at all depends on the exporter, and the
layer list (and the cascade) would differ for the same network.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

LAYER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
)


@dataclass(frozen=True)
class WeightedLayer:
    """A node with learned weights: its name (the node's, or "<op_type> #<i>" for the i-th node of that op type when
    the exporter left it empty), its op type, and the names of its learned float tensors (initializers or Constant
    outputs), a bias added by a separate Add node included."""

    name: str
    op_type: str
    tensors: tuple[str, ...]


def weighted_layers(model: onnx.ModelProto) -> list[WeightedLayer]:
    """The graph's weighted layers, the one closest to the output first (graph.node is topologically sorted, so its
    reverse order is top-down). A MatMul of two activations (attention) has no weight and is no layer; a weight
    several nodes share belongs to the top-most of them only, so each tensor is randomised once."""
    graph = model.graph
    learned = _learned_tensors(graph)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    names = _node_names(graph)
    claimed: set[str] = set()
    layers = []
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type not in LAYER_OPS:
            continue
        candidates = [*node.input, *_separate_bias(node, consumers, learned)]
        tensors = tuple(dict.fromkeys(name for name in candidates if name in learned and name not in claimed))
        if tensors:
            claimed.update(tensors)
            layers.append(WeightedLayer(names[index], node.op_type, tensors))
    return layers


def randomize_layers(
    model: onnx.ModelProto, layers: Sequence[WeightedLayer], rng: np.random.Generator
) -> onnx.ModelProto:
    """A copy of the graph whose layers' tensors are redrawn, in the order given, from a normal distribution with
    each tensor's own mean and standard deviation: activations stay in the range the rest of the network expects
    whatever the framework's initialisation was. Shapes and dtypes are kept; a constant tensor stays as it is.
    The model must be loaded with its external data."""
    randomized = onnx.ModelProto()
    randomized.CopyFrom(model)
    tensors = _stored_tensors(randomized.graph)
    for layer in layers:
        for name in layer.tensors:
            if name not in tensors:
                raise ValueError(f"layer {layer.name!r} names tensor {name!r}, which the graph does not store")
            _redraw(tensors[name], rng)
    return randomized


def _redraw(tensor: onnx.TensorProto, rng: np.random.Generator) -> None:
    if uses_external_data(tensor):
        raise ValueError(f"tensor {tensor.name!r} lives in an external file: load the model with its external data")
    values = numpy_helper.to_array(tensor)
    wide = values.astype(np.float64)
    std = float(wide.std())
    if std == 0.0:
        return
    drawn = rng.normal(float(wide.mean()), std, size=values.shape).astype(values.dtype)
    tensor.CopyFrom(numpy_helper.from_array(drawn, tensor.name))


def _stored_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Tensors the graph stores, by the value name nodes read them under: initializers and Constant values."""
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((attribute.t for attribute in node.attribute if attribute.name == "value"), None)
            if value is not None:
                tensors[node.output[0]] = value
    return tensors


def _learned_tensors(graph: onnx.GraphProto) -> set[str]:
    """Stored float tensors of at least two elements: weights, as opposed to shapes, indices and scalar constants."""
    return {
        name
        for name, tensor in _stored_tensors(graph).items()
        if tensor.data_type in _FLOAT_TYPES and math.prod(tensor.dims) >= 2
    }


def _separate_bias(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], learned: set[str]) -> list[str]:
    """The bias of a layer an exporter split in two (torch's Linear on 3-D inputs: MatMul, then Add of the bias):
    the learned input of the one Add that alone reads the layer's output."""
    readers = consumers.get(node.output[0], [])
    if len(readers) != 1 or readers[0].op_type != "Add":
        return []
    return [name for name in readers[0].input if name in learned]


def _node_names(graph: onnx.GraphProto) -> list[str]:
    counts: Counter[str] = Counter()
    names = []
    for node in graph.node:
        names.append(node.name or f"{node.op_type} #{counts[node.op_type]}")
        counts[node.op_type] += 1
    return names
