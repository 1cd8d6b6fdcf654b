"""Softmax and LogSoftmax VJP rules against torch autograd, over their axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vjp import check_against_torch, one_op_model

FUNCTIONS = {"Softmax": torch.softmax, "LogSoftmax": torch.log_softmax}


@pytest.mark.parametrize("op_type", list(FUNCTIONS))
@pytest.mark.parametrize(("shape", "axis"), [((4, 10), None), ((4, 10), 0), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -2)])
@pytest.mark.parametrize("opset", [13, 17, 21])
def test_softmax(op_type: str, shape: tuple[int, ...], axis: int | None, opset: int) -> None:
    x = (3 * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    attrs = {} if axis is None else {"axis": axis}
    model = one_op_model(op_type, {"x": x}, opset=opset, **attrs)
    check_against_torch(model, {"x": x}, lambda t: FUNCTIONS[op_type](t, -1 if axis is None else axis))
