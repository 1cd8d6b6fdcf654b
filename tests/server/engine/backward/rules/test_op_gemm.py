"""Gemm VJP rule against torch autograd: every transA and transB pair, alpha and beta, C broadcast or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vjp import check_against_torch, one_op_model

M, K, N = 3, 4, 5


def _random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _gemm_reference(trans_a: int, trans_b: int, alpha: float, beta: float):
    def gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        product = alpha * (a.T if trans_a else a) @ (b.T if trans_b else b)
        return product if c is None else product + beta * c

    return gemm


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [(N,), (1, N), (M, N), (M, 1), ()], ids=str)
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, -2.0)])
def test_gemm(trans_a: int, trans_b: int, c_shape: tuple[int, ...], alpha: float, beta: float) -> None:
    inputs = {
        "a": _random((K, M) if trans_a else (M, K), 1),
        "b": _random((N, K) if trans_b else (K, N), 2),
        "c": _random(c_shape, 3),
    }
    model = one_op_model("Gemm", inputs, transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    check_against_torch(model, inputs, _gemm_reference(trans_a, trans_b, alpha, beta))


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_without_c(trans_a: int, trans_b: int) -> None:
    inputs = {"a": _random((K, M) if trans_a else (M, K), 1), "b": _random((N, K) if trans_b else (K, N), 2)}
    model = one_op_model("Gemm", inputs, transA=trans_a, transB=trans_b, alpha=2.0)
    check_against_torch(model, inputs, _gemm_reference(trans_a, trans_b, 2.0, 1.0))


def test_linear_layer_as_pytorch_exports_it() -> None:
    # Weights and bias are initializers: only the input's gradient is built.
    x = _random((M, K), 1)
    weight, bias = _random((N, K), 2), _random((N,), 3)
    model = one_op_model("Gemm", {"x": x}, {"weight": weight, "bias": bias}, transB=1)
    check_against_torch(
        model,
        {"x": x},
        lambda t: torch.nn.functional.linear(t, torch.tensor(weight, dtype=t.dtype), torch.tensor(bias, dtype=t.dtype)),
    )
