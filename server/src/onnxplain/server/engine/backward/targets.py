"""Which tensor a gradient method differentiates, and which feature map CAM methods read by default."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import onnx
from onnx import helper

from onnxplain.server.engine.backward.context import Shape
from onnxplain.server.repository.signature import output_activation

_GLOBAL_POOLS = {"GlobalAveragePool", "GlobalMaxPool"}
_REDUCE_POOLS = {"ReduceMean", "ReduceMax", "ReduceSum"}
_WINDOW_POOLS = {"AveragePool", "MaxPool"}


def explained_tensor(model: onnx.ModelProto, output: str, probability: bool, class_axis: int = 1) -> str:
    """The logits by default: a trailing Softmax, LogSoftmax or Sigmoid is skipped, since gradients of a probability
    mix all classes and vanish as it saturates. With `probability`, the probability itself (a Softmax over the
    logits is appended for models that output logits or log-probabilities)."""
    activation = output_activation(model.graph, output)
    if activation is None:
        return _append_softmax(model, output, class_axis) if probability else output
    logits = activation.input[0]
    if not probability:
        return logits
    if activation.op_type == "LogSoftmax":
        axis = next((a.i for a in activation.attribute if a.name == "axis"), -1)
        return _append_softmax(model, logits, axis)
    return activation.output[0]


def _append_softmax(model: onnx.ModelProto, logits: str, axis: int) -> str:
    name = "onnxplain_probability"
    model.graph.node.append(helper.make_node("Softmax", [logits], [name], name="onnxplain_softmax", axis=axis))
    return name


@dataclass(frozen=True)
class FeatureMap:
    """A 4-D activation and where its channel and spatial axes are (exporters of NHWC models keep NHWC maps)."""

    tensor: str
    channel_axis: int
    spatial_axes: tuple[int, int]


def default_feature_map(graph: onnx.GraphProto, target: str, shapes: dict[str, Shape]) -> FeatureMap | None:
    """The last 4-D feature map before the classifier head: the input of the pooling (global, window over the whole
    map, or a mean over two axes) or of the Flatten (or flattening Reshape) nearest the target, searched backwards
    from the target. A map that a Transpose made channels-last (Keras exports) keeps its axes as the perm put them."""
    producers = {out: node for node in graph.node for out in node.output}
    constants = {init.name: init for init in graph.initializer}
    seen, queue = set(), deque([target])
    while queue:
        node = producers.get(queue.popleft())
        # Keyed by the first output: node names are optional in ONNX, and exporters leave some empty.
        if node is None or node.output[0] in seen:
            continue
        seen.add(node.output[0])
        found = _pooled_map(node, shapes, constants, producers)
        if found is not None:
            return found
        queue.extend(name for name in node.input if name and name not in constants)
    return None


def feature_map_named(name: str, shapes: dict[str, Shape]) -> FeatureMap:
    """A layer a request names: 4-D, taken as channels-first (what ONNX convolutions produce)."""
    shape = shapes.get(name)
    if shape is None or len(shape) != 4:
        raise ValueError(f"layer {name!r} is not a 4-D feature map (shape {shape})")
    return FeatureMap(name, 1, (2, 3))


def _pooled_map(
    node: onnx.NodeProto, shapes: dict[str, Shape], constants: dict, producers: dict[str, onnx.NodeProto]
) -> FeatureMap | None:
    source = node.input[0] if node.input else ""
    shape = shapes.get(source)
    if shape is None or len(shape) != 4:
        return None
    found = None
    if node.op_type in _GLOBAL_POOLS | _WINDOW_POOLS:
        if node.op_type not in _WINDOW_POOLS or _covers_whole_map(node, shape):
            found = FeatureMap(source, 1, (2, 3))
    elif node.op_type == "Flatten" or (node.op_type == "Reshape" and len(shapes.get(node.output[0]) or ()) == 2):
        found = _flattened_map(source, producers.get(source))
    elif node.op_type in _REDUCE_POOLS:
        axes = _reduce_axes(node, constants)
        if axes is not None and len(axes) == 2:
            spatial = tuple(sorted(a % 4 for a in axes))
            channel = next(a for a in (1, 2, 3) if a not in spatial)
            found = FeatureMap(source, channel, spatial)  # type: ignore[arg-type]
    # A map already pooled to 1x1 (the Flatten after global pooling) has nothing spatial left to show.
    if found is None or all(shape[axis] == 1 for axis in found.spatial_axes):
        return None
    return found


# The Transpose that turns a channels-last map back into channels-first (a channels-last LayerNorm in between, as
# in ConvNeXt's head): its output is channels-first, whatever its input was.
_TO_CHANNELS_FIRST = [0, 3, 1, 2]


def averages_whole_map(
    node: onnx.NodeProto, feature_map: FeatureMap, shapes: dict[str, Shape], constants: dict[str, onnx.TensorProto]
) -> bool:
    """Whether `node` averages the feature map over all its positions (global average pooling, a mean over its
    spatial axes, an average pool whose window is the whole map): behind it the map's gradient is the same at every
    position, which CAM's weights assume."""
    channels_first = feature_map.spatial_axes == (2, 3)
    if node.op_type == "GlobalAveragePool":
        return channels_first
    if node.op_type == "AveragePool":
        shape = shapes.get(feature_map.tensor)
        pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [])
        return channels_first and shape is not None and _covers_whole_map(node, shape) and not any(pads)
    if node.op_type == "ReduceMean":
        axes = _reduce_axes(node, constants)
        return axes is not None and sorted(a % 4 for a in axes) == sorted(feature_map.spatial_axes)
    return False


def _flattened_map(source: str, producer: onnx.NodeProto | None) -> FeatureMap | None:
    """The map a Flatten reads: channels-first, unless a Transpose just reordered a channels-first map's axes. None
    when that Transpose moves the batch axis: the tensor is no image map (an attention's heads, flattened)."""
    if producer is not None and producer.op_type == "Transpose":
        perm = next((list(a.ints) for a in producer.attribute if a.name == "perm"), [3, 2, 1, 0])
        if perm[0] != 0:
            return None
        if perm != _TO_CHANNELS_FIRST:
            return FeatureMap(source, perm.index(1), (perm.index(2), perm.index(3)))
    return FeatureMap(source, 1, (2, 3))


def _covers_whole_map(node: onnx.NodeProto, shape: Shape) -> bool:
    kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
    return list(shape[2:]) == kernel


def _reduce_axes(node: onnx.NodeProto, constants: dict) -> list[int] | None:
    for attribute in node.attribute:
        if attribute.name == "axes":
            return list(attribute.ints)
    if len(node.input) > 1 and node.input[1] in constants:
        return onnx.numpy_helper.to_array(constants[node.input[1]]).tolist()
    return None
