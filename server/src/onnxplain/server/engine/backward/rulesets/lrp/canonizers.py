"""Graph rewrites run before the LRP walk, as Zennit's canonizers rewrite torch modules: the rules then see each linear
layer with its whole affine map (bias and any inference BatchNormalization after it folded in), so z contains the bias
as in Zennit and Captum.

Each canonizer rewrites the model it is given in place: the builder hands it its own copy, never the served model.
Folded weights are new initializers; the originals are dropped only when nothing else reads them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

LINEAR_WITH_BIAS = ("Conv", "ConvTranspose", "Gemm")


class _Graph:
    """What the rewrites need to know about a graph: constant values, producers, how often each tensor is read."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producers = {out: node for node in graph.node for out in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in dict.fromkeys(node.input):
                self.readers[name].append(node)
        self.uses = Counter(name for node in graph.node for name in node.input if name)
        self.uses.update(value.name for value in graph.output)
        self._taken = set(self.constants) | set(self.producers) | {value.name for value in graph.input}

    def read_once(self, name: str) -> bool:
        return self.uses[name] == 1

    def add_constant(self, array: np.ndarray, base: str) -> str:
        name, counter = f"{base}_lrp", 0
        while name in self._taken:
            counter += 1
            name = f"{base}_lrp{counter}"
        self._taken.add(name)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        self.constants[name] = array
        return name

    def drop_unread(self, names: Iterable[str]) -> None:
        """Remove initializers that no node reads any more (a graph input of the same name keeps its default)."""
        read = {name for node in self.graph.node for name in node.input} | {value.name for value in self.graph.output}
        read |= {value.name for value in self.graph.input}
        unread = set(names) - read
        kept = [init for init in self.graph.initializer if init.name not in unread]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)


def resolve_constant_aliases(model: onnx.ModelProto) -> None:
    """Identity(constant) → the constant itself: exporters alias duplicate initializers this way, and the rules need
    a layer's weights as constants."""
    view = _Graph(model.graph)
    outputs = {value.name for value in model.graph.output}
    aliases: dict[str, str] = {}
    for node in model.graph.node:
        source = aliases.get(node.input[0], node.input[0]) if node.input else ""
        if node.op_type == "Identity" and source in view.constants and node.output[0] not in outputs:
            aliases[node.output[0]] = source
    if not aliases:
        return
    kept = [node for node in model.graph.node if not (node.op_type == "Identity" and node.output[0] in aliases)]
    for node in kept:
        node.input[:] = [aliases.get(name, name) for name in node.input]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def merge_matmul_bias(model: onnx.ModelProto) -> None:
    """MatMul(x, W) followed by Add(b), x 2-D, becomes Gemm(x, W, b): a dense layer with its bias, as TensorFlow
    exports write them."""
    view = _Graph(model.graph)
    pairs = [(node, bias) for node in model.graph.node if (bias := _bias_add(view, node)) is not None]
    if not pairs:
        return
    ranks = _ranks(model)
    merged = []
    for matmul, (add, bias) in pairs:
        if ranks.get(matmul.input[0]) != 2:
            continue
        bias_name = view.add_constant(bias.reshape(-1), f"{matmul.input[1]}_bias")
        matmul.op_type = "Gemm"
        matmul.input[:] = [matmul.input[0], matmul.input[1], bias_name]
        matmul.output[:] = [add.output[0]]
        merged.append(add)
    kept = [node for node in model.graph.node if all(node is not add for add in merged)]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def fold_batch_norms(model: onnx.ModelProto) -> None:
    """An inference BatchNormalization that is the only reader of a Conv/ConvTranspose/Gemm output is folded into that
    layer's weight and bias (Zennit MergeBatchNorm), so the layer's rule sees the normalised output as its z."""
    view = _Graph(model.graph)
    folded = []
    for norm in model.graph.node:
        layer = view.producers.get(norm.input[0]) if norm.op_type == "BatchNormalization" else None
        if layer is None or layer.op_type not in LINEAR_WITH_BIAS or not view.read_once(norm.input[0]):
            continue
        params = _folded(view, layer, norm)
        if params is None:
            continue
        weight, bias = params
        replaced = list(layer.input[1:]) + list(norm.input[1:])
        layer.input[:] = [
            layer.input[0],
            view.add_constant(weight, layer.input[1]),
            view.add_constant(bias, f"{layer.name or layer.output[0]}_bias"),
        ]
        if layer.op_type == "Gemm":
            _set_attribute(layer, "beta", 1.0)
        layer.output[0] = norm.output[0]
        folded.append((norm, replaced))
    if not folded:
        return
    kept = [node for node in model.graph.node if all(node is not norm for norm, _ in folded)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    view.drop_unread(name for _, names in folded for name in names)


CANONIZERS = (resolve_constant_aliases, merge_matmul_bias, fold_batch_norms)


def _bias_add(view: _Graph, node: onnx.NodeProto) -> tuple[onnx.NodeProto, np.ndarray] | None:
    """The Add of a constant bias that alone reads this MatMul's output (x·W with W a 2-D constant), and the bias."""
    weight = view.constants.get(node.input[1]) if node.op_type == "MatMul" else None
    if weight is None or weight.ndim != 2 or not view.read_once(node.output[0]):
        return None
    add = next(iter(view.readers.get(node.output[0], ())), None)
    if add is None or add.op_type != "Add" or add.input[0] == add.input[1]:
        return None
    bias = view.constants.get(add.input[1] if add.input[0] == node.output[0] else add.input[0])
    if bias is None or bias.size != weight.shape[1] or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
        return None
    return add, bias


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    return {
        value.name: len(value.type.tensor_type.shape.dim)
        for value in (*graph.input, *graph.value_info, *graph.output)
        if value.type.tensor_type.HasField("shape")
    }


def _folded(view: _Graph, layer: onnx.NodeProto, norm: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
    """The layer's weight and bias with the normalisation folded in, or None when something is not a constant (or
    the BatchNormalization computes batch statistics)."""
    attrs = {attr.name: helper.get_attribute_value(attr) for attr in norm.attribute}
    if attrs.get("training_mode", 0) or len([out for out in norm.output if out]) != 1:
        return None
    stats = [view.constants.get(name) for name in norm.input[1:5]]
    weight = view.constants.get(layer.input[1])
    bias_name = layer.input[2] if len(layer.input) > 2 else ""
    bias = view.constants.get(bias_name) if bias_name else np.zeros(())
    if weight is None or bias is None or any(stat is None for stat in stats):
        return None
    gain, shift, mean, var = (np.asarray(stat, dtype=np.float64) for stat in stats)
    scale = gain / np.sqrt(var + attrs.get("epsilon", 1e-5))
    layer_attrs = {attr.name: helper.get_attribute_value(attr) for attr in layer.attribute}
    if layer.op_type == "Gemm":
        # y = alpha·A·B + beta·C: scale the output columns of B, and beta·C becomes the bias (beta is set to 1).
        columns = scale[:, None] if layer_attrs.get("transB", 0) else scale[None, :]
        new_weight = weight * columns
        bias = bias * layer_attrs.get("beta", 1.0)
    else:
        new_weight = weight * _output_channel_scale(layer.op_type, weight.shape, layer_attrs.get("group", 1), scale)
    new_bias = bias * scale + (shift - mean * scale)
    return new_weight.astype(weight.dtype), new_bias.astype(weight.dtype)


def _output_channel_scale(op_type: str, shape: tuple[int, ...], group: int, scale: np.ndarray) -> np.ndarray:
    """The per-output-channel scale shaped to multiply a Conv ([M, C/g, k…]) or ConvTranspose ([C, M/g, k…]) weight."""
    kernel = (1,) * (len(shape) - 2)
    if op_type == "Conv":
        return scale.reshape(-1, 1, *kernel)
    inputs, per_group = shape[0], shape[1]
    channel = (np.arange(inputs)[:, None] // (inputs // group)) * per_group + np.arange(per_group)[None, :]
    return scale[channel].reshape(inputs, per_group, *kernel)


def _set_attribute(node: onnx.NodeProto, name: str, value: float) -> None:
    kept = [attr for attr in node.attribute if attr.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])
