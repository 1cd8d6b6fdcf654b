"""Which forward tensors can never be negative, read from the ops that compute them.

LRP's z⁺, alpha-beta and gamma rules split a layer's input into x⁺ and x⁻ and run the layer forward and back once for
each half. After a ReLU, x⁻ is exactly zero and its half adds exact zeros for a forward and a VJP of the layer: the
rules skip it for inputs this module proves non-negative. The answer is conservative: False whenever unsure.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

# Ops whose every output value is >= 0, whatever their input.
NON_NEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "HardSigmoid", "Softmax", "Exp", "Abs"})
# Ops whose output values are selections, copies, sums or averages of their first input's values.
FIRST_INPUT_OPS = frozenset(
    {
        "MaxPool",
        "GlobalMaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "ReduceMax",
        "ReduceMin",
        "ReduceMean",
        "ReduceSum",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Identity",
        "Dropout",
        "Slice",
        "Split",
        "Gather",
        "Expand",
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
# Ops that are non-negative when all their inputs are.
ALL_INPUTS_OPS = frozenset({"Concat", "Add", "Mul", "Min", "Sum"})
# Deep chains of rearranging ops are not worth following: past this depth the answer is "unsure".
MAX_DEPTH = 64


def never_negative(
    name: str,
    producer: Callable[[str], onnx.NodeProto | None],
    value: Callable[[str], np.ndarray | None],
    known: dict[str, bool],
    depth: int = 0,
) -> bool:
    """Whether tensor `name` is >= 0 for every input; `known` memoises answers across calls."""
    if name not in known:
        known[name] = _decide(name, producer, value, known, depth)
    return known[name]


def _decide(
    name: str,
    producer: Callable[[str], onnx.NodeProto | None],
    value: Callable[[str], np.ndarray | None],
    known: dict[str, bool],
    depth: int,
) -> bool:
    constant = value(name)
    if constant is not None:
        return at_least_zero(constant)
    node = producer(name)
    if node is None or depth > MAX_DEPTH:
        return False

    def holds(operand: str) -> bool:
        return never_negative(operand, producer, value, known, depth + 1)

    if node.op_type in NON_NEGATIVE_OPS:
        return True
    if node.op_type in FIRST_INPUT_OPS:
        return holds(node.input[0])
    if node.op_type in ALL_INPUTS_OPS:
        return all(holds(operand) for operand in node.input if operand)
    if node.op_type == "Max":
        return any(holds(operand) for operand in node.input if operand)
    if node.op_type == "Pad":
        # Exporters that pad explicitly before a convolution (tf2onnx): the constant mode pads with 0 unless told
        # otherwise (an input from opset 11, an attribute before); the other modes copy the input's own values.
        if _string_attribute(node, "mode", "constant") == "constant":
            pad_value = node.input[2] if len(node.input) > 2 else ""
            if pad_value and not at_least_zero(value(pad_value)):
                return False
            if _float_attribute(node, "value", 0.0) < 0:
                return False
        return holds(node.input[0])
    if node.op_type == "Resize":
        # Nearest and linear interpolation stay within the input's values; cubic overshoots.
        return _string_attribute(node, "mode", "nearest") != "cubic" and holds(node.input[0])
    if node.op_type == "Clip":
        # min(max(x, low), high) is >= 0 when high, if given, is, and low or x is.
        low_given, low_at_least_zero = _clip_bound(node, value, 1, "min")
        high_given, high_at_least_zero = _clip_bound(node, value, 2, "max")
        low_holds = (low_given and low_at_least_zero) or holds(node.input[0])
        return (not high_given or high_at_least_zero) and low_holds
    return False


def _clip_bound(
    node: onnx.NodeProto, value: Callable[[str], np.ndarray | None], index: int, attribute: str
) -> tuple[bool, bool]:
    """Whether a bound of Clip is given, and whether it is a constant >= 0 (an input from opset 11, an attribute
    before)."""
    if len(node.input) > index and node.input[index]:
        return True, at_least_zero(value(node.input[index]))
    given = next((a.f for a in node.attribute if a.name == attribute), None)
    return given is not None, given is not None and given >= 0


def at_least_zero(constant: np.ndarray | None) -> bool:
    """Whether a constant is known (not None) and has no negative value."""
    return constant is not None and bool(np.all(constant >= 0))


def _string_attribute(node: onnx.NodeProto, name: str, default: str) -> str:
    return next((a.s.decode() for a in node.attribute if a.name == name), default)


def _float_attribute(node: onnx.NodeProto, name: str, default: float) -> float:
    return next((a.f for a in node.attribute if a.name == name), default)
