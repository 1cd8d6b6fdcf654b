"""Abs, Log, Sin, Cos and the piecewise-constant ops against torch autograd, zeros and jumps included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vjp import check_against_torch, one_op_model, onnx_vjp

X = (2.0 * np.random.default_rng(8).standard_normal((2, 3, 4))).astype(np.float32)


def _check(op_type: str, x: np.ndarray, function, opset: int = 17) -> None:
    check_against_torch(one_op_model(op_type, {"x": x}, opset=opset), {"x": x}, function)


def test_abs_has_zero_gradient_at_zero() -> None:
    x = X.copy()
    x.reshape(-1)[:3] = [0.0, -0.0, 1e-6]
    _check("Abs", x, torch.abs)


def test_log() -> None:
    _check("Log", np.abs(X) + 0.1, torch.log)


@pytest.mark.parametrize(("op_type", "function"), [("Sin", torch.sin), ("Cos", torch.cos)])
def test_trigonometric(op_type: str, function) -> None:
    _check(op_type, X, function)


@pytest.mark.parametrize(
    ("op_type", "function"),
    [("Sign", torch.sign), ("Floor", torch.floor), ("Ceil", torch.ceil), ("Round", torch.round)],
)
@pytest.mark.parametrize("opset", [17, 22])
def test_piecewise_constant_ops_have_zero_gradient(op_type: str, function, opset: int) -> None:
    x = X.copy()
    x.reshape(-1)[:4] = [0.0, 0.5, 1.0, -1.5]  # on the jumps
    _check(op_type, x, function, opset=opset)


def test_zero_gradient_through_a_piecewise_constant_op_still_yields_a_map() -> None:
    # Floor is the only path from x to the output: the builder returns zeros rather than refusing the model.
    model = one_op_model("Floor", {"x": X})
    (grad,) = onnx_vjp(model, {"x": X}, np.ones_like(X), ["x"])
    assert grad.shape == X.shape and not grad.any()
