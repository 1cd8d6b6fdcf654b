"""Rewrite quantized operators into float ops between DequantizeLinear and QuantizeLinear (the QDQ form), so that the
float VJP rules and the straight-through estimator of rules/op_quantize.py differentiate them.

The QOperator form (QLinearConv, QLinearMatMul, com.microsoft's QLinearAdd, QGemm...) computes on integers; each op
becomes its float op on dequantized inputs and weights, and its result is quantized again with the op's own output
scale and zero point, so the forward result stays the quantized model's up to rounding. Ops that only move or select
quantized values (MaxPool, Reshape, Concat... on uint8) get the same treatment with their input's parameters.
quantize_dynamic's ConvInteger and MatMulInteger (integer products, scaled by the graph after a Cast) become the float
product in the same integer units. Ops and forms not listed here stay, and the builder then names them as missing a
rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxplain.server.engine.backward.graph import FreshNames

# The scale and zero point ("" when absent) a quantized tensor dequantizes with.
Params = tuple[str, str]

# Ops that move or select values and run on quantized tensors as they are: value for value, the same op in float.
_DIRECT_OPS = frozenset(
    {
        "MaxPool",
        "GlobalMaxPool",
        "Reshape",
        "Flatten",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Gather",
        "Split",
        "Slice",
        "Pad",
        "Resize",
        "Identity",
        "Concat",
        "Expand",
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
_DOMAINS = ("", "ai.onnx", "com.microsoft")


def dequantize_operators(model: onnx.ModelProto) -> None:
    """Rewrite the model's quantized operators in place. The Q/DQ nodes it adds may be per-axis (opset 13)."""
    _Rewriter(model.graph).run()


class _Rewriter:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.params: dict[str, Params] = {}
        self.nodes: list[onnx.NodeProto] = []
        self._constants = {init.name: init for init in graph.initializer}
        self._dequantized: dict[tuple[str, str, str], str] = {}
        self.fresh = FreshNames(graph, "onnxplain_dq")
        # Tensors whose element type changed (integer products now in float): their stale value_info goes.
        self.retyped: set[str] = set()

    def run(self) -> None:
        for node in self.graph.node:
            rewrite = _REWRITES.get(node.op_type) if node.domain in _DOMAINS else None
            if rewrite is not None and rewrite(self, node):
                continue
            if node.op_type in _DIRECT_OPS and node.domain in ("", "ai.onnx") and node.input[0] in self.params:
                _direct(self, node)
                continue
            if node.op_type == "QuantizeLinear":
                self.params[node.output[0]] = (node.input[1], _input(node, 2))
            elif node.op_type == "DynamicQuantizeLinear":
                self.params[node.output[0]] = (node.output[1], node.output[2])
            self.nodes.append(node)
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        kept = [value for value in self.graph.value_info if value.name not in self.retyped]
        del self.graph.value_info[:]
        self.graph.value_info.extend(kept)

    def emit(
        self,
        op_type: str,
        inputs: Sequence[str],
        output: str | None = None,
        attributes: Sequence[onnx.AttributeProto] = (),
        **attrs: object,
    ) -> str:
        output = output or self.fresh(op_type.lower())
        node = helper.make_node(op_type, list(inputs), [output], name=self.fresh(f"{op_type.lower()}_node"), **attrs)
        node.attribute.extend(attributes)
        self.nodes.append(node)
        return output

    def constant(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        tensor = numpy_helper.from_array(value, name)
        self.graph.initializer.append(tensor)
        self._constants[name] = tensor
        return name

    def dequantize(self, quantized: str, scale: str, zero_point: str, axis: int | None = None) -> str:
        """DequantizeLinear of `quantized` (once per tensor and parameters); `axis` is where a per-axis scale runs."""
        key = (quantized, scale, zero_point)
        if key not in self._dequantized:
            inputs = [quantized, scale, zero_point] if zero_point else [quantized, scale]
            attrs = {} if axis is None else {"axis": axis}
            self._dequantized[key] = self.emit("DequantizeLinear", inputs, **attrs)
        return self._dequantized[key]

    def requantize(self, value: str, scale: str, zero_point: str, output: str) -> None:
        """QuantizeLinear of a float result into the original node's integer output."""
        self.emit("QuantizeLinear", [value, scale, zero_point] if zero_point else [value, scale], output)
        self.params[output] = (scale, zero_point)

    def is_constant(self, name: str) -> bool:
        return name in self._constants

    def integer_units(self, quantized: str, zero_point: str, axis: int) -> str:
        """An integer tensor less its constant zero point, in float (a dequantization with unit scales)."""
        shape = self._constants[zero_point].dims if zero_point else []
        return self.dequantize(quantized, self.constant(np.ones(shape, np.float32), "unit_scale"), zero_point, axis)


Rewrite = Callable[[_Rewriter, onnx.NodeProto], bool]


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _qlinear_conv(r: _Rewriter, node: onnx.NodeProto) -> bool:
    """Bias: int32 with scale x_scale·w_scale and zero point 0."""
    x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = node.input[:8]
    inputs = [r.dequantize(x, x_scale, x_zero), r.dequantize(w, w_scale, w_zero, axis=0)]
    if _input(node, 8):
        inputs.append(r.dequantize(node.input[8], r.emit("Mul", [x_scale, w_scale]), "", axis=0))
    r.requantize(r.emit("Conv", inputs, attributes=node.attribute), y_scale, y_zero, node.output[0])
    return True


def _qlinear_matmul(r: _Rewriter, node: onnx.NodeProto) -> bool:
    """Per-column scales of b."""
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = node.input[:8]
    product = r.emit("MatMul", [r.dequantize(a, a_scale, a_zero), r.dequantize(b, b_scale, b_zero, axis=-1)])
    r.requantize(product, y_scale, y_zero, node.output[0])
    return True


def _qgemm(r: _Rewriter, node: onnx.NodeProto) -> bool:
    """com.microsoft QGemm: C is int32 at scale a_scale·b_scale and joins the product before alpha scales it; without
    y_scale the output is float."""
    a, a_scale, a_zero, b, b_scale, b_zero = node.input[:6]
    trans_a, trans_b, alpha = _attr(node, "transA", 0), _attr(node, "transB", 0), _attr(node, "alpha", 1.0)
    inputs = [r.dequantize(a, a_scale, a_zero), r.dequantize(b, b_scale, b_zero, axis=0 if trans_b else 1)]
    if _input(node, 6):
        inputs.append(r.dequantize(node.input[6], r.emit("Mul", [a_scale, b_scale]), "", axis=0))
    y_scale, y_zero = _input(node, 7), _input(node, 8)
    output = None if y_scale else node.output[0]
    gemm = r.emit("Gemm", inputs, output, alpha=alpha, beta=alpha, transA=trans_a, transB=trans_b)
    if y_scale:
        r.requantize(gemm, y_scale, y_zero, node.output[0])
    return True


def _binary(op_type: str) -> Rewrite:
    """com.microsoft QLinearAdd / QLinearMul: (A, scale, zero point, B, scale, zero point, C scale, C zero point)."""

    def rewrite(r: _Rewriter, node: onnx.NodeProto) -> bool:
        a, a_scale, a_zero, b, b_scale, b_zero, c_scale = node.input[:7]
        inputs = [r.dequantize(a, a_scale, a_zero), r.dequantize(b, b_scale, b_zero)]
        r.requantize(r.emit(op_type, inputs), c_scale, _input(node, 7), node.output[0])
        return True

    return rewrite


def _unary(op_type: str, attribute_names: Sequence[str] = ()) -> Rewrite:
    """com.microsoft QLinear unary ops: (X, scale, zero point, Y scale, Y zero point), the float op's attributes."""

    def rewrite(r: _Rewriter, node: onnx.NodeProto) -> bool:
        if _attr(node, "channels_last", 0):
            return False
        x, x_scale, x_zero, y_scale = node.input[:4]
        attributes = [a for a in node.attribute if a.name in attribute_names]
        value = r.emit(op_type, [r.dequantize(x, x_scale, x_zero)], attributes=attributes)
        r.requantize(value, y_scale, _input(node, 4), node.output[0])
        return True

    return rewrite


def _qlinear_concat(r: _Rewriter, node: onnx.NodeProto) -> bool:
    """com.microsoft QLinearConcat: (Y scale, Y zero point, then X, scale, zero point for each input)."""
    y_scale, y_zero, *triples = node.input
    inputs = [r.dequantize(*triples[i : i + 3]) for i in range(0, len(triples), 3)]
    r.requantize(r.emit("Concat", inputs, attributes=node.attribute), y_scale, y_zero, node.output[0])
    return True


def _integer_product(op_type: str, weight_axis: int) -> Rewrite:
    """ConvInteger / MatMulInteger of a quantized activation and weights, as quantize_dynamic writes them: the product
    of the two inputs less their zero points, which the graph then scales. In float, the activation is dequantized
    (so the STE sees a pair) and the weights, less their zero point, divided by its scale, which keeps the integer
    units. A product whose first input's quantization is unknown, or whose weights' zero point is computed at run
    time, stays as it is."""

    def rewrite(r: _Rewriter, node: onnx.NodeProto) -> bool:
        x, w, x_zero, w_zero = node.input[0], node.input[1], _input(node, 2), _input(node, 3)
        if x not in r.params or (w_zero and not r.is_constant(w_zero)):
            return False
        scale = r.params[x][0]
        weights = r.emit("Div", [r.integer_units(w, w_zero, weight_axis), scale])
        r.emit(op_type, [r.dequantize(x, scale, x_zero), weights], node.output[0], attributes=node.attribute)
        r.retyped.add(node.output[0])
        return True

    return rewrite


def _direct(r: _Rewriter, node: onnx.NodeProto) -> None:
    """The op in float between its input's dequantization and a quantization with the same parameters. Pad's
    constant value is quantized with them too."""
    scale, zero = r.params[node.input[0]]
    inputs = [r.dequantize(name, *r.params[name]) if name in r.params else name for name in node.input]
    if node.op_type == "Pad" and _input(node, 2):
        inputs[2] = r.dequantize(node.input[2], scale, zero)
    quantized = list(node.output if node.op_type == "Split" else node.output[:1])
    float_node = onnx.NodeProto()
    float_node.CopyFrom(node)
    del float_node.input[:]
    float_node.input.extend(inputs)
    for index in range(len(quantized)):
        float_node.output[index] = r.fresh(node.op_type.lower())
    r.nodes.append(float_node)
    for index, output in enumerate(quantized):
        r.requantize(float_node.output[index], scale, zero, output)


_REWRITES: dict[str, Rewrite] = {
    "QLinearConv": _qlinear_conv,
    "QLinearMatMul": _qlinear_matmul,
    "QGemm": _qgemm,
    "QLinearAdd": _binary("Add"),
    "QLinearMul": _binary("Mul"),
    "QLinearGlobalAveragePool": _unary("GlobalAveragePool"),
    "QLinearSigmoid": _unary("Sigmoid"),
    "QLinearLeakyRelu": _unary("LeakyRelu", ("alpha",)),
    "QLinearConcat": _qlinear_concat,
    "ConvInteger": _integer_product("Conv", 0),
    "MatMulInteger": _integer_product("MatMul", -1),
}
