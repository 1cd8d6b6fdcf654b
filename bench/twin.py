"""A torch module rebuilt from a chain CNN's ONNX graph (Conv, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm):
what onnx2torch does for these ops, without its torchvision import. The peers run Captum and Zennit on it."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn


def torch_twin(model: onnx.ModelProto) -> nn.Sequential:
    """The graph's nodes, in order, as torch layers with the graph's weights; every node must take the previous
    node's output (a chain)."""
    weights = {init.name: numpy_helper.to_array(init).copy() for init in model.graph.initializer}
    layers = [_layer(node, weights) for node in model.graph.node]
    return nn.Sequential(*layers).eval()


def _layer(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> nn.Module:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        kernel = weights[node.input[1]]
        pads = attributes.get("pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise ValueError(f"asymmetric padding {pads} is not supported")
        conv = nn.Conv2d(
            kernel.shape[1] * attributes.get("group", 1),
            kernel.shape[0],
            tuple(kernel.shape[2:]),
            stride=tuple(attributes.get("strides", [1, 1])),
            padding=tuple(pads[:2]),
            dilation=tuple(attributes.get("dilations", [1, 1])),
            groups=attributes.get("group", 1),
            bias=len(node.input) > 2,
        )
        _load(conv, weights, node.input[1:])
        return conv
    if node.op_type == "Relu":
        return nn.ReLU()
    if node.op_type == "MaxPool":
        pads = attributes.get("pads", [0, 0, 0, 0])
        return nn.MaxPool2d(tuple(attributes["kernel_shape"]), tuple(attributes.get("strides", [1, 1])), pads[:2])
    if node.op_type == "GlobalAveragePool":
        return nn.AdaptiveAvgPool2d(1)
    if node.op_type == "Flatten":
        return nn.Flatten(attributes.get("axis", 1))
    if node.op_type == "Gemm" and attributes.get("transB", 0) == 1:
        weight = weights[node.input[1]]
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=len(node.input) > 2)
        _load(linear, weights, node.input[1:])
        return linear
    raise ValueError(f"no torch twin for ONNX op {node.op_type}")


def _load(layer: nn.Module, weights: dict[str, np.ndarray], names: list[str]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights[names[0]]))
        if len(names) > 1:
            layer.bias.copy_(torch.from_numpy(weights[names[1]]))
