"""Activation and unary math VJP rules against torch autograd, kinks and boundaries included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.vjp import check_against_torch, one_op_model

SHAPE = (2, 3, 4, 5)


def _random(shape: tuple[int, ...] = SHAPE, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _with_values(values: list[float], seed: int = 0, scale: float = 2.0) -> np.ndarray:
    """A random input whose first entries are exactly `values` (kinks, boundaries)."""
    x = _random(seed=seed, scale=scale)
    x.reshape(-1)[: len(values)] = values
    return x


def _check_unary(op_type: str, x: np.ndarray, function, opset: int = 17, **attrs) -> None:
    check_against_torch(one_op_model(op_type, {"x": x}, opset=opset, **attrs), {"x": x}, function)


@pytest.mark.parametrize("opset", [11, 17, 21])
def test_relu_is_strict_at_zero(opset: int) -> None:
    # Opset 11 is converted up to the builder's minimum first.
    _check_unary("Relu", _with_values([0.0, -0.0, 1e-6, -1e-6]), torch.relu, opset=opset)


@pytest.mark.parametrize("alpha", [None, 0.2, -0.5])
def test_leaky_relu(alpha: float | None) -> None:
    attrs = {} if alpha is None else {"alpha": alpha}
    x = _with_values([0.0, 1e-6, -1e-6])
    _check_unary("LeakyRelu", x, lambda t: F.leaky_relu(t, 0.01 if alpha is None else alpha), **attrs)


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (5,)])
def test_prelu_broadcasts_its_slope(slope_shape: tuple[int, ...]) -> None:
    x = _with_values([0.0, 1.0, -1.0])
    slope = _random(slope_shape, seed=1, scale=0.5)
    model = one_op_model("PRelu", {"x": x}, {"slope": slope})
    check_against_torch(model, {"x": x}, lambda t: torch.where(t > 0, t, t * torch.tensor(slope, dtype=t.dtype)))


@pytest.mark.parametrize(
    ("low", "high"),
    [(0.0, 6.0), (-1.0, 1.0), (0.5, None), (None, 0.5), (None, None)],
)
def test_clip_has_strict_bounds(low: float | None, high: float | None) -> None:
    # Exact bound values, 0 (relu6 after a Relu) and values outside both bounds.
    x = _with_values([v for v in (low, high) if v is not None] + [0.0, -7.0, 7.0], scale=4.0)
    bounds = {name: np.float32(v) for name, v in (("low", low), ("high", high)) if v is not None}
    order = ["x", "low" if low is not None else "", "high" if high is not None else ""]
    model = one_op_model("Clip", {"x": x}, bounds, input_order=order)
    lower = -math.inf if low is None else low
    upper = math.inf if high is None else high
    check_against_torch(model, {"x": x}, lambda t: F.hardtanh(t, lower, upper))


def test_clip_with_attribute_bounds_converted_from_opset_6() -> None:
    x = _with_values([0.0, 6.0, -1.0, 7.0], scale=4.0)
    model = one_op_model("Clip", {"x": x}, opset=6, min=0.0, max=6.0)
    check_against_torch(model, {"x": x}, F.relu6)


@pytest.mark.parametrize(
    ("op_type", "function"),
    [("Sigmoid", torch.sigmoid), ("Tanh", torch.tanh), ("Erf", torch.erf), ("Exp", torch.exp), ("Neg", torch.neg)],
)
def test_smooth_unary(op_type: str, function) -> None:
    _check_unary(op_type, _random(), function)


@pytest.mark.parametrize(("alpha", "beta"), [(None, None), (1 / 6, 0.5), (0.5, 0.5), (-0.25, 0.25)])
def test_hard_sigmoid(alpha: float | None, beta: float | None) -> None:
    attrs = {k: v for k, v in (("alpha", alpha), ("beta", beta)) if v is not None}
    a, b = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    # The inputs where z = a·x + b is exactly 0 and 1 (exact in float32 for these alphas and betas).
    x = _with_values([-b / a, (1 - b) / a, 0.0], scale=4.0)
    _check_unary("HardSigmoid", x, lambda t: F.hardtanh(a * t + b, 0.0, 1.0), **attrs)


def test_hard_sigmoid_as_torch_exports_it() -> None:
    x = _with_values([-3.0, 3.0, 0.0], scale=4.0)
    _check_unary("HardSigmoid", x, F.hardsigmoid, alpha=1 / 6)


def test_hard_swish_at_its_kinks() -> None:
    x = _with_values([-3.0, 3.0, 0.0, -3.0001, 3.0001], scale=4.0)
    _check_unary("HardSwish", x, F.hardswish)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate: str) -> None:
    _check_unary("Gelu", _random(), lambda t: F.gelu(t, approximate=approximate), opset=20, approximate=approximate)


def test_sqrt() -> None:
    x = np.abs(_random()) + 0.1
    _check_unary("Sqrt", x, torch.sqrt)


def test_reciprocal() -> None:
    x = _random()
    x = np.where(np.abs(x) < 0.2, 0.5, x).astype(np.float32)
    _check_unary("Reciprocal", x, torch.reciprocal)


@pytest.mark.parametrize(
    "exponent", [np.float32(2.0), np.float32(3.0), np.float32(0.5), np.array([1.0, 2.0, 3.0, 0.5, -1.0], np.float32)]
)
def test_pow_with_constant_exponent(exponent: np.ndarray) -> None:
    x = np.abs(_random()) + 0.1
    model = one_op_model("Pow", {"x": x}, {"p": exponent})
    check_against_torch(model, {"x": x}, lambda t: torch.pow(t, torch.tensor(exponent, dtype=t.dtype)))


def test_pow_with_an_exponent_broadcasting_the_base() -> None:
    x = np.abs(_random((4, 1))) + 0.1
    exponent = np.array([[1.0, 2.0, 3.0]], np.float32)
    model = one_op_model("Pow", {"x": x}, {"p": exponent})
    check_against_torch(model, {"x": x}, lambda t: torch.pow(t, torch.tensor(exponent, dtype=t.dtype)))


@pytest.mark.parametrize(
    ("op_type", "attrs", "function"),
    [
        ("Elu", {}, F.elu),
        ("Elu", {"alpha": 0.5}, lambda t: F.elu(t, alpha=0.5)),
        ("Selu", {}, F.selu),
        ("Selu", {"alpha": 1.5, "gamma": 2.0}, lambda t: torch.where(t > 0, 2.0 * t, 3.0 * torch.expm1(t))),
        ("Celu", {}, F.celu),
        ("Celu", {"alpha": 2.0}, lambda t: F.celu(t, alpha=2.0)),
    ],
)
def test_exponential_linear_units_at_zero(op_type: str, attrs: dict, function) -> None:
    # At 0 torch takes the negative piece's slope: alpha (Elu), gamma·alpha (Selu), 1 (Celu).
    _check_unary(op_type, _with_values([0.0, -0.0, 1e-6, -1e-6, -30.0]), function, **attrs)


@pytest.mark.parametrize("alpha", [None, 0.5, -1.0])
def test_thresholded_relu_is_strict_at_alpha(alpha: float | None) -> None:
    a = 1.0 if alpha is None else alpha
    attrs = {} if alpha is None else {"alpha": alpha}
    _check_unary(
        "ThresholdedRelu", _with_values([a, 0.0, a + 1e-3, a - 1e-3]), lambda t: F.threshold(t, a, 0.0), **attrs
    )


@pytest.mark.parametrize(
    ("op_type", "function"), [("Softplus", F.softplus), ("Softsign", F.softsign), ("Mish", F.mish)]
)
@pytest.mark.parametrize("opset", [18, 22])
def test_smooth_activations(op_type: str, function, opset: int) -> None:
    # Mish appeared at opset 18; Softplus and Softsign got new versions at 22. Large inputs reach saturation.
    _check_unary(op_type, _with_values([0.0, 25.0, -25.0], scale=3.0), function, opset=opset)
