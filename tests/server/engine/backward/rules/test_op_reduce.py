"""The reduce rules against torch autograd: keepdims 0/1, axes variants (negative, several, absent, empty with
noop_with_empty_axes), in the attribute form (ReduceSum below opset 13, the others below 18) and the input form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.vjp import check_against_torch, one_op_model, symbolic_batch

X = np.random.default_rng(3).standard_normal((2, 3, 4, 5)).astype(np.float32)

REFERENCES = {"ReduceSum": torch.sum, "ReduceMean": torch.mean, "ReduceMax": torch.amax, "ReduceMin": torch.amin}
# The opset from which each op takes its axes as an input.
AXES_INPUT_FROM = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18}


def _reduce_model(op_type: str, opset: int, axes: list[int] | None, keepdims: int, noop: int = 0):
    attrs = {"keepdims": keepdims}
    if noop:
        attrs["noop_with_empty_axes"] = noop
    initializers = {}
    if axes is not None and opset >= AXES_INPUT_FROM[op_type]:
        initializers["axes"] = np.asarray(axes, dtype=np.int64)
    elif axes is not None:
        attrs["axes"] = axes
    return one_op_model(op_type, {"x": X}, initializers, opset=opset, **attrs)


@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [[1], [-1, 1], [0, 2, 3], None])
def test_reduce(op_type, opset, keepdims, axes):
    model = _reduce_model(op_type, opset, axes, keepdims)
    dims = tuple(range(X.ndim)) if axes is None else tuple(axes)
    check_against_torch(model, {"x": X}, lambda t: REFERENCES[op_type](t, dim=dims, keepdim=bool(keepdims)))


@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMean", "ReduceMax"])
def test_empty_axes_with_noop_pass_through(op_type):
    model = _reduce_model(op_type, 18, [], keepdims=1, noop=1)
    check_against_torch(model, {"x": X}, lambda t: t)


@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMean", "ReduceMax"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_symbolic_batch(op_type, keepdims):
    """Global average pooling as exported by some tools: a mean over H, W with an unknown batch."""
    model = symbolic_batch(_reduce_model(op_type, 18, [2, 3], keepdims))
    check_against_torch(model, {"x": X}, lambda t: REFERENCES[op_type](t, dim=(2, 3), keepdim=bool(keepdims)))
