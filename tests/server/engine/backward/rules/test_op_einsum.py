"""Einsum against torch.einsum's autograd: the equations exports produce (batched matmuls of attention, bilinear
forms, transposes, reductions), implicit outputs, ellipses, letters only one operand has, and the forms the rule
refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vjp import check_against_torch, one_op_model, onnx_vjp, symbolic_batch

from onnxplain.server.engine.backward.builder import MissingRule

# equation: operand shapes
EQUATIONS = {
    "bhid,bhjd->bhij": [(2, 2, 3, 4), (2, 2, 5, 4)],
    "bhij,bhjd->bhid": [(2, 2, 3, 5), (2, 2, 5, 4)],
    "bij,bjk->bik": [(2, 3, 4), (2, 4, 5)],
    "ij,kj->ik": [(3, 4), (5, 4)],
    "nc,c->n": [(3, 4), (4,)],
    "bn,anm,bm->ba": [(2, 3), (4, 3, 5), (2, 5)],
    "nchw->nhwc": [(2, 3, 4, 5)],
    "nchw->nc": [(2, 3, 4, 5)],
    "ij,jk": [(3, 4), (4, 5)],
    "ba,ca": [(3, 4), (5, 4)],
    "...ij,...jk->...ik": [(2, 3, 4, 5), (2, 3, 5, 2)],
    "b...d,bd->b...": [(2, 3, 4, 5), (2, 5)],
    "...ij,jk": [(2, 3, 4), (4, 5)],
    "ij,k->ijk": [(3, 4), (5,)],
    "ij,jk->i": [(3, 4), (4, 5)],
    "ij,k->ij": [(3, 4), (5,)],
}


def _operands(shapes: list[tuple[int, ...]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {f"x{i}": rng.standard_normal(shape).astype(np.float32) for i, shape in enumerate(shapes)}


@pytest.mark.parametrize("equation", list(EQUATIONS))
@pytest.mark.parametrize("opset", [12, 17])
def test_einsum(equation: str, opset: int) -> None:
    inputs = _operands(EQUATIONS[equation])
    model = one_op_model("Einsum", inputs, opset=opset, equation=equation)
    check_against_torch(model, inputs, lambda *ts: torch.einsum(equation, *ts))


def test_attention_scores_with_symbolic_batch() -> None:
    inputs = _operands(EQUATIONS["bhid,bhjd->bhij"])
    model = symbolic_batch(one_op_model("Einsum", inputs, equation="bhid,bhjd->bhij"))
    check_against_torch(model, inputs, lambda *ts: torch.einsum("bhid,bhjd->bhij", *ts))


def test_constant_operand_gets_no_gradient() -> None:
    x = _operands([(2, 3, 4)])["x0"]
    weight = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    model = one_op_model("Einsum", {"x": x}, {"w": weight}, equation="bij,jk->bik")
    check_against_torch(model, {"x": x}, lambda t: torch.einsum("bij,jk->bik", t, torch.tensor(weight, dtype=t.dtype)))


@pytest.mark.parametrize(
    ("equation", "shapes", "message"),
    [
        ("ii->i", [(3, 3)], "repeated subscript"),
        ("...ij,...jk->...ik", [(2, 3, 4), (1, 4, 5)], "broadcasts inside its ellipsis"),
    ],
)
def test_unsupported_forms_are_refused(equation: str, shapes, message: str) -> None:
    inputs = _operands(shapes)
    model = one_op_model("Einsum", inputs, equation=equation)
    seed = np.zeros((3,) if equation == "ii->i" else (2, 3, 5), np.float32)
    with pytest.raises(MissingRule, match=message):
        onnx_vjp(model, inputs, seed, list(inputs))
