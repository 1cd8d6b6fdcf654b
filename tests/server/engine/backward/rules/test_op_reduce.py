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


def _log_sum(t, dim, keepdim):
    return torch.log(torch.sum(t, dim=dim, keepdim=keepdim))


ELEMENTWISE_REFERENCES = {
    "ReduceSumSquare": lambda t, dim, keepdim: torch.sum(t * t, dim=dim, keepdim=keepdim),
    "ReduceL1": lambda t, dim, keepdim: torch.sum(t.abs(), dim=dim, keepdim=keepdim),
    "ReduceL2": lambda t, dim, keepdim: torch.linalg.vector_norm(t, dim=dim, keepdim=keepdim),
    "ReduceLogSumExp": torch.logsumexp,
    "ReduceLogSum": _log_sum,
}


def _elementwise_model(op_type: str, x: np.ndarray, opset: int, axes: list[int] | None, keepdims: int, noop: int = 0):
    attrs = {"keepdims": keepdims, **({"noop_with_empty_axes": noop} if noop else {})}
    initializers = {}
    if axes is not None and opset >= 18:
        initializers["axes"] = np.asarray(axes, dtype=np.int64)
    elif axes is not None:
        attrs["axes"] = axes
    return one_op_model(op_type, {"x": x}, initializers, opset=opset, **attrs)


def _input_for(op_type: str) -> np.ndarray:
    """X with zeros (the kinks of |x| and the L2 norm) except for ReduceLogSum, whose sums must be positive."""
    if op_type == "ReduceLogSum":
        return np.abs(X) + 0.1
    x = X.copy()
    x[0, 0] = 0.0  # a whole zero slice: a zero norm for axes inside it
    x[1, 2, 1, :2] = 0.0
    return x


@pytest.mark.parametrize("op_type", list(ELEMENTWISE_REFERENCES))
@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [[1], [-1, 2], None])
def test_reduce_of_elementwise(op_type, opset, keepdims, axes):
    x = _input_for(op_type)
    model = _elementwise_model(op_type, x, opset, axes, keepdims)
    dims = tuple(range(X.ndim)) if axes is None else tuple(axes)
    check_against_torch(model, {"x": x}, lambda t: ELEMENTWISE_REFERENCES[op_type](t, dim=dims, keepdim=bool(keepdims)))


def test_l2_norm_of_zeros_has_zero_gradient():
    x = _input_for("ReduceL2")
    model = _elementwise_model("ReduceL2", x, 18, [2, 3], keepdims=1)
    check_against_torch(model, {"x": x}, lambda t: torch.linalg.vector_norm(t, dim=(2, 3), keepdim=True))


# With empty axes and noop_with_empty_axes=1, ONNX Runtime applies the elementwise part without reducing.
NOOP_REFERENCES = {
    "ReduceSumSquare": lambda t: t * t,
    "ReduceL1": torch.abs,
    "ReduceL2": torch.abs,
    "ReduceLogSumExp": lambda t: t,
    "ReduceLogSum": torch.log,
}


@pytest.mark.parametrize("op_type", list(NOOP_REFERENCES))
def test_elementwise_reduce_with_noop_empty_axes(op_type):
    x = _input_for(op_type)
    model = _elementwise_model(op_type, x, 18, [], keepdims=1, noop=1)
    check_against_torch(model, {"x": x}, NOOP_REFERENCES[op_type])


@pytest.mark.parametrize("op_type", ["ReduceL2", "ReduceLogSumExp", "ReduceLogSum"])
def test_elementwise_reduce_with_symbolic_batch(op_type):
    x = _input_for(op_type)
    model = symbolic_batch(_elementwise_model(op_type, x, 18, [2, 3], keepdims=0))
    check_against_torch(model, {"x": x}, lambda t: ELEMENTWISE_REFERENCES[op_type](t, dim=(2, 3), keepdim=False))
