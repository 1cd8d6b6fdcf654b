"""LRN against torch's local_response_norm (same window for odd sizes) and, for even sizes, whose window ONNX and
torch place differently, against central differences of the ONNX reference evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch.nn.functional as F
from onnx.reference import ReferenceEvaluator
from support.vjp import check_against_torch, one_op_model, symbolic_batch

from onnxplain.server.engine.backward.builder import SEED_INPUT, differentiate
from onnxplain.server.engine.backward.prepare import with_min_opset

X = np.random.default_rng(9).standard_normal((2, 7, 3, 4)).astype(np.float32)

# (size, alpha, beta, bias): AlexNet's (5, 1e-4, 0.75, 2) with a larger alpha so the cross-channel term shows.
PARAMETERS = [(5, 0.5, 0.75, 2.0), (3, 1.0, 0.5, 1.0), (1, 0.3, 0.75, 1.0), (9, 2.0, 1.5, 0.5)]


@pytest.mark.parametrize(("size", "alpha", "beta", "bias"), PARAMETERS)
@pytest.mark.parametrize("opset", [13, 17])
def test_lrn_odd_sizes_against_torch(size: int, alpha: float, beta: float, bias: float, opset: int) -> None:
    model = one_op_model("LRN", {"x": X}, opset=opset, size=size, alpha=alpha, beta=beta, bias=bias)
    check_against_torch(model, {"x": X}, lambda t: F.local_response_norm(t, size, alpha, beta, bias))


def test_lrn_defaults_with_symbolic_batch() -> None:
    model = symbolic_batch(one_op_model("LRN", {"x": X}, size=3))
    check_against_torch(model, {"x": X}, lambda t: F.local_response_norm(t, 3, 1e-4, 0.75, 1.0))


def _lrn_by_the_spec(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The ONNX spec's formula in numpy (onnx.reference's LRN loops over the batch instead of the channels)."""
    channels = x.shape[1]
    square_sum = np.stack(
        [
            (x[:, max(0, c - (size - 1) // 2) : min(channels, c + math.ceil((size - 1) / 2) + 1)] ** 2).sum(axis=1)
            for c in range(channels)
        ],
        axis=1,
    )
    return x / (bias + alpha / size * square_sum) ** beta


@pytest.mark.parametrize("size", [2, 4])
def test_lrn_even_sizes_against_finite_differences(size: int) -> None:
    """ONNX Runtime runs odd sizes only: the ONNX reference evaluator runs our backward graph here, and central
    differences of the spec's formula in float64 are the reference."""
    x = X[:1, :, :2, :2].astype(np.float64)
    model = one_op_model("LRN", {"x": x}, size=size, alpha=1.0, beta=0.75, bias=1.0)
    seed = np.random.default_rng(1).standard_normal(x.shape)
    built = differentiate(with_min_opset(model), "y0", ["x"])
    (ours,) = ReferenceEvaluator(built.model).run([built.gradients["x"]], {"x": x, SEED_INPUT: seed})
    step, expected = 1e-6, np.zeros_like(x)
    for index in np.ndindex(x.shape):
        sides = []
        for sign in (1.0, -1.0):
            moved = x.copy()
            moved[index] += sign * step
            sides.append(_lrn_by_the_spec(moved, size, 1.0, 0.75, 1.0))
        expected[index] = float((seed * (sides[0] - sides[1])).sum()) / (2 * step)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-8)
