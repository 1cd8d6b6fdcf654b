"""MatMul VJP rule against torch autograd: ranks 1 to 4, batch broadcasting on either side."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vjp import check_against_torch, one_op_model

SHAPES = {
    "matrices": ((3, 4), (4, 5)),
    "batched": ((2, 3, 4), (2, 4, 5)),
    "batched by a matrix": ((2, 3, 4), (4, 5)),
    "matrix by a batch": ((3, 4), (2, 4, 5)),
    "rank 4": ((2, 3, 4, 5), (2, 3, 5, 6)),
    "rank 4 by rank 3": ((2, 3, 4, 5), (3, 5, 6)),
    "batch of one broadcast": ((2, 1, 4, 5), (1, 3, 5, 6)),
    "vector by matrix": ((4,), (4, 5)),
    "vector by batch": ((4,), (2, 4, 5)),
    "matrix by vector": ((3, 4), (4,)),
    "batch by vector": ((2, 3, 4), (4,)),
    "vector by vector": ((4,), (4,)),
}


@pytest.mark.parametrize("shapes", list(SHAPES.values()), ids=list(SHAPES))
def test_matmul(shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in zip("ab", shapes, strict=True)}
    check_against_torch(one_op_model("MatMul", inputs), inputs, torch.matmul)


def test_matmul_by_a_weight_initializer() -> None:
    # A transformer's Linear exported as MatMul: only the activation's gradient is built.
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((2, 3, 4)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    model = one_op_model("MatMul", {"x": x}, {"weight": weight})
    check_against_torch(model, {"x": x}, lambda t: t @ torch.tensor(weight, dtype=t.dtype))
