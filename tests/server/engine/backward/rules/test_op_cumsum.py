"""CumSum against torch autograd in every exclusive/reverse combination, on several axes (negative included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vjp import check_against_torch, one_op_model

X = np.random.default_rng(10).standard_normal((2, 3, 4)).astype(np.float32)


def _reference(axis: int, exclusive: int, reverse: int):
    def cumulative(t: torch.Tensor) -> torch.Tensor:
        if reverse:
            t = t.flip(axis)
        total = torch.cumsum(t, axis)
        if exclusive:
            total = total - t
        return total.flip(axis) if reverse else total

    return cumulative


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("opset", [11, 14])
def test_cumsum(exclusive: int, reverse: int, axis: int, opset: int) -> None:
    model = one_op_model(
        "CumSum", {"x": X}, {"axis": np.int64(axis)}, opset=opset, exclusive=exclusive, reverse=reverse
    )
    check_against_torch(model, {"x": X}, _reference(axis, exclusive, reverse))
