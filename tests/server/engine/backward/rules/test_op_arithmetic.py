"""Broadcasting arithmetic VJP rules against torch autograd: every broadcasting pattern, on either side."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vjp import check_against_torch, one_op_model

# (first operand shape, second operand shape)
BROADCASTS = {
    "same shape": ((2, 3, 4, 5), (2, 3, 4, 5)),
    "per-channel second": ((2, 3, 4, 5), (3, 1, 1)),
    "per-channel first": ((3, 1, 1), (2, 3, 4, 5)),
    "scalar second": ((2, 3, 4, 5), ()),
    "scalar first": ((), (2, 3, 4, 5)),
    "lower rank second": ((2, 3, 4, 5), (4, 5)),
    "lower rank first": ((5,), (2, 3, 4, 5)),
    "size-1 batch": ((1, 3, 4, 5), (2, 3, 4, 5)),
    "both broadcast": ((2, 1, 4, 1), (1, 3, 1, 5)),
    "both broadcast, ranks differ": ((3, 1, 5), (2, 1, 4, 1)),
}

FUNCTIONS = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}


def _operand(shape: tuple[int, ...], seed: int, away_from_zero: bool = False) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(shape)
    if away_from_zero:  # divisors
        values = np.sign(values) * (0.5 + np.abs(values))
    return np.asarray(values, dtype=np.float32)


@pytest.mark.parametrize("op_type", list(FUNCTIONS))
@pytest.mark.parametrize("shapes", list(BROADCASTS.values()), ids=list(BROADCASTS))
def test_binary_op_broadcasting(op_type: str, shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    inputs = {"a": _operand(shapes[0], 1), "b": _operand(shapes[1], 2, away_from_zero=op_type == "Div")}
    check_against_torch(one_op_model(op_type, inputs), inputs, FUNCTIONS[op_type])


@pytest.mark.parametrize("op_type", list(FUNCTIONS))
def test_constant_operand_gets_no_gradient(op_type: str) -> None:
    # A bias or scale initializer: only the input's gradient is built.
    x = _operand((2, 3, 4, 5), 1)
    constant = _operand((3, 1, 1), 2, away_from_zero=True)
    model = one_op_model(op_type, {"x": x}, {"c": constant})
    check_against_torch(model, {"x": x}, lambda t: FUNCTIONS[op_type](t, torch.tensor(constant, dtype=t.dtype)))


@pytest.mark.parametrize("op_type", list(FUNCTIONS))
def test_same_tensor_in_both_positions(op_type: str) -> None:
    x = _operand((2, 3, 4), 1, away_from_zero=True)
    model = one_op_model(op_type, {"x": x}, input_order=["x", "x"])
    check_against_torch(model, {"x": x}, lambda t: FUNCTIONS[op_type](t, t))


def test_variadic_sum_broadcasts() -> None:
    inputs = {"a": _operand((2, 3, 4, 5), 1), "b": _operand((3, 1, 1), 2), "c": _operand((5,), 3)}
    check_against_torch(one_op_model("Sum", inputs), inputs, lambda a, b, c: a + b + c)


def test_sum_of_one_input() -> None:
    inputs = {"a": _operand((2, 3), 1)}
    check_against_torch(one_op_model("Sum", inputs), inputs, lambda a: a * 1)


def test_neg() -> None:
    inputs = {"a": _operand((2, 3), 1)}
    check_against_torch(one_op_model("Neg", inputs), inputs, torch.neg)


@pytest.mark.parametrize("opset", [11, 17])
def test_variadic_mean_broadcasts(opset: int) -> None:
    inputs = {"a": _operand((2, 3, 4, 5), 1), "b": _operand((3, 1, 1), 2), "c": _operand((5,), 3)}
    check_against_torch(one_op_model("Mean", inputs, opset=opset), inputs, lambda a, b, c: (a + b + c) / 3)
