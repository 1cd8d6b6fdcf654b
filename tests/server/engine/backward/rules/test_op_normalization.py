"""The normalization rules against torch autograd: BatchNormalization at inference (ranks 2 to 4, epsilons),
InstanceNormalization with weight and bias, LayerNormalization over the last 1 and last 3 axes (with and without
bias, with the optional Mean/InvStdDev outputs present), and the training forms the rules refuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.vjp import check_against_torch, one_op_model, onnx_vjp, symbolic_batch

from onnxplain.server.engine.backward.builder import MissingRule

RNG = np.random.default_rng(5)


def _random(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _params(channels: int) -> dict[str, np.ndarray]:
    """Scale, bias, running mean and variance away from the identity, so the checks see them."""
    return {
        "scale": (1.0 + _random(channels)).astype(np.float32),
        "bias": _random(channels),
        "mean": _random(channels),
        "var": RNG.uniform(0.2, 2.0, channels).astype(np.float32),
    }


def _tensor(value: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=like.dtype)


def _batch_norm(p: dict[str, np.ndarray], epsilon: float = 1e-5):
    def reference(t):
        mean, var, scale, bias = (_tensor(p[k], t) for k in ("mean", "var", "scale", "bias"))
        return F.batch_norm(t, mean, var, scale, bias, training=False, eps=epsilon)

    return reference


def _instance_norm(p: dict[str, np.ndarray], epsilon: float = 1e-5):
    return lambda t: F.instance_norm(t, weight=_tensor(p["scale"], t), bias=_tensor(p["bias"], t), eps=epsilon)


def _layer_norm(normalized: tuple[int, ...], scale: np.ndarray, bias: np.ndarray | None, epsilon: float = 1e-5):
    def reference(t):
        return F.layer_norm(t, normalized, _tensor(scale, t), None if bias is None else _tensor(bias, t), eps=epsilon)

    return reference


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3), (2, 3, 7)])
@pytest.mark.parametrize(("epsilon", "opset"), [(None, 15), (1e-3, 9), (0.1, 17)])
def test_batch_normalization(shape, epsilon, opset):
    x, p = _random(*shape), _params(shape[1])
    attrs = {} if epsilon is None else {"epsilon": epsilon}
    model = one_op_model("BatchNormalization", {"x": x}, p, opset=opset, **attrs)
    check_against_torch(model, {"x": x}, _batch_norm(p, epsilon or 1e-5))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 6)])
@pytest.mark.parametrize("epsilon", [None, 1e-2])
def test_instance_normalization(shape, epsilon):
    x, p = _random(*shape), _params(shape[1])
    attrs = {} if epsilon is None else {"epsilon": epsilon}
    model = one_op_model("InstanceNormalization", {"x": x}, {"scale": p["scale"], "bias": p["bias"]}, **attrs)
    check_against_torch(model, {"x": x}, _instance_norm(p, epsilon or 1e-5))


@pytest.mark.parametrize(
    ("shape", "axis", "normalized"),
    [((2, 5, 8), None, (8,)), ((2, 5, 8), -1, (8,)), ((2, 3, 4, 5), -3, (3, 4, 5)), ((2, 3, 4, 5), 1, (3, 4, 5))],
)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("outputs", [1, 3])
def test_layer_normalization(shape, axis, normalized, bias, outputs):
    x, scale, shift = _random(*shape), (1.0 + _random(*normalized)).astype(np.float32), _random(*normalized)
    initializers = {"scale": scale, "bias": shift} if bias else {"scale": scale}
    attrs = {"epsilon": 1e-3} if axis is None else {"axis": axis}
    model = one_op_model("LayerNormalization", {"x": x}, initializers, outputs=outputs, **attrs)
    reference = _layer_norm(normalized, scale, shift if bias else None, attrs.get("epsilon", 1e-5))
    check_against_torch(model, {"x": x}, reference)


@pytest.mark.parametrize("op_type", ["BatchNormalization", "InstanceNormalization", "LayerNormalization"])
def test_symbolic_batch(op_type):
    x, p = _random(2, 3, 4, 5), _params(3)
    scale, shift = _random(5), _random(5)
    cases = {
        "BatchNormalization": (p, _batch_norm(p)),
        "InstanceNormalization": ({"scale": p["scale"], "bias": p["bias"]}, _instance_norm(p)),
        "LayerNormalization": ({"scale": scale, "bias": shift}, _layer_norm((5,), scale, shift)),
    }
    initializers, reference = cases[op_type]
    model = symbolic_batch(one_op_model(op_type, {"x": x}, initializers))
    check_against_torch(model, {"x": x}, reference)


def test_batch_normalization_in_training_mode_is_refused():
    x, p = _random(2, 3, 4, 5), _params(3)
    model = one_op_model("BatchNormalization", {"x": x}, p, outputs=3, opset=15, training_mode=1)
    with pytest.raises(MissingRule, match="training mode"):
        onnx_vjp(model, {"x": x}, np.ones(x.shape, np.float32), ["x"])


@pytest.mark.parametrize(("shape", "groups"), [((2, 6, 4, 3), 3), ((2, 4, 5), 2), ((1, 4, 3, 3), 4), ((2, 6, 2, 2), 1)])
@pytest.mark.parametrize("opset", [18, 21])
def test_group_normalization(shape: tuple[int, ...], groups: int, opset: int) -> None:
    """Opset 18 scales per group, opset 21 per channel; torch's group_norm scales per channel, so the per-group
    parameters are repeated over each group's channels for it."""
    channels = shape[1]
    width = channels if opset >= 21 else groups
    scale, bias = (1.0 + _random(width)).astype(np.float32), _random(width)
    x = 3.0 * _random(*shape) + 1.0
    model = one_op_model(
        "GroupNormalization", {"x": x}, {"scale": scale, "bias": bias}, opset=opset, num_groups=groups, epsilon=1e-3
    )
    repeats = channels // width

    def reference(t):
        weight, shift = (_tensor(np.repeat(p, repeats), t) for p in (scale, bias))
        return F.group_norm(t, groups, weight, shift, eps=1e-3)

    check_against_torch(model, {"x": x}, reference)


def test_group_normalization_with_symbolic_batch() -> None:
    x = _random(2, 4, 3, 3)
    params = {"scale": _random(4), "bias": _random(4)}
    model = symbolic_batch(one_op_model("GroupNormalization", {"x": x}, params, opset=21, num_groups=2))
    check_against_torch(model, {"x": x}, lambda t: F.group_norm(t, 2, *(_tensor(p, t) for p in params.values())))
