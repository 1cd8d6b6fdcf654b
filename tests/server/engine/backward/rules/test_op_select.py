"""Where, Max and Min against torch autograd: broadcasting on every side, and ties, which torch.maximum/minimum split
in half between two operands and torch.amax/amin share equally among all the tied elements."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vjp import check_against_torch, one_op_model

SHAPES = {
    "same shape": [(2, 3, 4), (2, 3, 4)],
    "per-channel second": [(2, 3, 4), (3, 1)],
    "scalar first": [(), (2, 3, 4)],
    "both broadcast": [(2, 1, 4), (1, 3, 1)],
    "three operands": [(2, 3, 4), (4,), (3, 1)],
}


def _operands(shapes: list[tuple[int, ...]], ties: bool) -> dict[str, np.ndarray]:
    """Random operands; with `ties`, small integers, so many elements equal the extreme in several operands."""
    rng = np.random.default_rng(4)
    draw = (lambda s: rng.integers(-1, 2, s)) if ties else rng.standard_normal
    return {f"x{i}": np.asarray(draw(shape), np.float32) for i, shape in enumerate(shapes)}


def _shared_extreme(reduce):
    """The variadic op as a reduction over the stacked broadcast operands: ties share g equally."""
    return lambda *ts: reduce(torch.stack(torch.broadcast_tensors(*ts)), dim=0)


@pytest.mark.parametrize(("op_type", "reduce"), [("Max", torch.amax), ("Min", torch.amin)])
@pytest.mark.parametrize("shapes", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("ties", [False, True])
def test_max_min_broadcast_and_share_ties(op_type: str, reduce, shapes, ties: bool) -> None:
    inputs = _operands(shapes, ties)
    check_against_torch(one_op_model(op_type, inputs), inputs, _shared_extreme(reduce))


@pytest.mark.parametrize(("op_type", "function"), [("Max", torch.maximum), ("Min", torch.minimum)])
@pytest.mark.parametrize("opset", [12, 13, 17, 22])
def test_two_operand_ties_split_in_half_like_torch(op_type: str, function, opset: int) -> None:
    inputs = _operands(SHAPES["per-channel second"], ties=True)
    check_against_torch(one_op_model(op_type, inputs, opset=opset), inputs, function)


def test_max_with_a_constant_is_relu_like() -> None:
    x = _operands([(2, 3, 4)], ties=True)["x0"]
    model = one_op_model("Max", {"x": x}, {"zero": np.float32(0.0)})
    check_against_torch(model, {"x": x}, lambda t: torch.maximum(t, torch.zeros((), dtype=t.dtype)))


def test_single_operand_passes_through() -> None:
    inputs = _operands([(2, 3)], ties=False)
    check_against_torch(one_op_model("Max", inputs), inputs, lambda t: t)


@pytest.mark.parametrize("shapes", [[(2, 3, 4)] * 3, [(3, 1), (2, 3, 4), (4,)], [(2, 3, 4), (), (1, 4)]])
@pytest.mark.parametrize("opset", [16, 21])
def test_where_routes_through_the_condition(shapes, opset: int) -> None:
    # Opset 21 masks with Where, earlier ones with Cast·Mul.
    rng = np.random.default_rng(5)
    condition = rng.random(shapes[0]) > 0.5
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes[1:])
    model = one_op_model(
        "Where", {"a": a, "b": b}, {"condition": condition}, input_order=["condition", "a", "b"], opset=opset
    )
    mask = torch.tensor(condition)
    check_against_torch(model, {"a": a, "b": b}, lambda ta, tb: torch.where(mask, ta, tb))
