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
# Ops whose output values are selections, rearrangements or averages of their first input's values.
FIRST_INPUT_OPS = frozenset(
    {
        "MaxPool",
        "GlobalMaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Identity",
        "Slice",
        "Split",
        "Gather",
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
        return bool(np.all(constant >= 0))
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
    if node.op_type == "Clip":
        # Clip(x, min) with a constant min >= 0 (opset >= 11 passes it as an input; older opsets as an attribute).
        low = value(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        attribute = next((a.f for a in node.attribute if a.name == "min"), None)
        return (low is not None and bool(np.all(low >= 0))) or (attribute is not None and attribute >= 0)
    return False
