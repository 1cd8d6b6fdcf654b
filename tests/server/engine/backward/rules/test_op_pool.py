"""Pooling VJPs against torch autograd: MaxPool with overlapping windows and ties (where MaxUnpool goes wrong),
AveragePool over every count_include_pad and ceil_mode combination, the global pools; pads torch cannot express
(asymmetric, SAME, dilated averages) against central differences of ONNX Runtime's forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.vjp import check_against_finite_differences, check_against_torch, one_op_model

from onnxplain.server.engine.backward.builder import MissingRule, differentiate
from onnxplain.server.engine.backward.prepare import with_min_opset


def _image(shape: tuple[int, ...], seed: int = 5, ties: bool = False) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(shape)
    # Rounded to halves, most windows hold several equal maxima.
    return (np.round(values * 2) / 2 if ties else values).astype(np.float32)


# name: (input shape, MaxPool attributes)
MAX_POOLS = {
    "k3_s2_p1_overlap": ((2, 3, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "k3_s2_p1_odd": ((1, 2, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "k2_s2": ((2, 3, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "k3_s1": ((1, 2, 5, 5), {"kernel_shape": [3, 3]}),
    "ceil_mode": ((1, 2, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil_mode_pads": ((1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    "dilation2": ((1, 2, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [2, 2]}),
}


def _torch_max_pool(attrs: dict):
    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(
            x,
            attrs["kernel_shape"],
            attrs.get("strides", [1, 1]),
            attrs.get("pads", [0, 0])[:2],
            attrs.get("dilations", [1, 1]),
            ceil_mode=bool(attrs.get("ceil_mode", 0)),
        )

    return pool


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("pool", MAX_POOLS)
def test_max_pool_vjp_matches_torch(pool: str, ties: bool) -> None:
    shape, attrs = MAX_POOLS[pool]
    x = _image(shape, ties=ties)
    check_against_torch(one_op_model("MaxPool", {"x": x}, **attrs), {"x": x}, _torch_max_pool(attrs))


def test_max_pool_vjp_at_opset_11() -> None:
    shape, attrs = MAX_POOLS["k3_s2_p1_overlap"]
    x = _image(shape, ties=True)
    check_against_torch(one_op_model("MaxPool", {"x": x}, opset=11, **attrs), {"x": x}, _torch_max_pool(attrs))


def test_max_pool_vjp_with_asymmetric_pads_matches_torch() -> None:
    x = _image((1, 2, 8, 8), ties=True)
    model = one_op_model("MaxPool", {"x": x}, kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])
    check_against_torch(model, {"x": x}, lambda t: F.max_pool2d(F.pad(t, (0, 1, 0, 1), value=-np.inf), 3, 2))


def test_max_pool_vjp_with_same_upper_matches_torch() -> None:
    x = _image((1, 2, 7, 7), ties=True)
    model = one_op_model("MaxPool", {"x": x}, kernel_shape=[4, 4], strides=[2, 2], auto_pad="SAME_UPPER")
    # SAME on 7 with k4 s2: 4 outputs, 3 pads split 1 before, 2 after.
    check_against_torch(model, {"x": x}, lambda t: F.max_pool2d(F.pad(t, (1, 2, 1, 2), value=-np.inf), 4, 2))


@pytest.mark.parametrize(
    ("op_type", "attrs", "torch_pool"),
    [
        (
            "MaxPool",
            {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
            lambda t: F.max_pool2d(t, 3, 2, 1),
        ),
        (
            "AveragePool",
            {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
            lambda t: F.avg_pool2d(t, 3, 2, ceil_mode=True),
        ),
        ("GlobalAveragePool", {}, lambda t: t.mean(dim=(2, 3), keepdim=True)),
        ("GlobalMaxPool", {}, lambda t: t.amax(dim=(2, 3), keepdim=True)),
    ],
    ids=["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"],
)
def test_pool_vjp_with_symbolic_batch(op_type: str, attrs: dict, torch_pool) -> None:
    """The builder fixes the image size but not the batch: no constant may depend on it."""
    x = _image((3, 2, 7, 8), ties=op_type == "MaxPool")
    model = one_op_model(op_type, {"x": x}, **attrs)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    check_against_torch(model, {"x": x}, torch_pool)


def test_max_pool_backward_scatters_instead_of_unpooling() -> None:
    x = _image((1, 2, 8, 8))
    model = one_op_model("MaxPool", {"x": x}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    built = differentiate(with_min_opset(model), "y0", ["x"])
    op_types = {node.op_type for node in built.model.graph.node}
    assert "MaxUnpool" not in op_types
    assert "ScatterElements" in op_types
    assert len(built.model.graph.node[0].output) == 2  # the forward MaxPool now returns its Indices


# name: (input shape, AveragePool attributes); kernel 3, stride 2 and pad 1 on sizes where ceil_mode adds a window.
AVERAGE_POOLS = {
    f"cip{cip}_ceil{ceil}_{size}": (
        (2, 3, size, size + 1),
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": cip, "ceil_mode": ceil},
    )
    for cip in (0, 1)
    for ceil in (0, 1)
    for size in (6, 8)
}


@pytest.mark.parametrize("pool", AVERAGE_POOLS)
def test_average_pool_vjp_matches_torch(pool: str) -> None:
    shape, attrs = AVERAGE_POOLS[pool]
    x = _image(shape)

    def torch_pool(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(
            t, 3, 2, 1, ceil_mode=bool(attrs["ceil_mode"]), count_include_pad=bool(attrs["count_include_pad"])
        )

    check_against_torch(one_op_model("AveragePool", {"x": x}, **attrs), {"x": x}, torch_pool)


def test_average_pool_vjp_without_pads_matches_torch() -> None:
    x = _image((1, 2, 7, 7))
    model = one_op_model("AveragePool", {"x": x}, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    check_against_torch(model, {"x": x}, lambda t: F.avg_pool2d(t, 2, 2, ceil_mode=True))


@pytest.mark.parametrize(
    "attrs",
    [
        {"pads": [0, 1, 1, 2], "count_include_pad": 0},
        {"pads": [0, 1, 1, 2], "count_include_pad": 1, "ceil_mode": 1},
        {"auto_pad": "SAME_UPPER", "count_include_pad": 1},
        {"auto_pad": "SAME_LOWER"},
        {"pads": [2, 1, 2, 1], "dilations": [2, 2], "count_include_pad": 0},
        {"pads": [2, 1, 2, 1], "dilations": [2, 2], "count_include_pad": 1, "ceil_mode": 1},
    ],
    ids=[
        "asymmetric",
        "asymmetric_cip_ceil",
        "same_upper",
        "same_lower",
        "dilated",
        "dilated_cip",
    ],
)
def test_average_pool_vjp_matches_onnxruntime(attrs: dict) -> None:
    x = _image((1, 2, 7, 8))
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], **attrs}
    model = one_op_model("AveragePool", {"x": x}, opset=19, **attrs)
    check_against_finite_differences(model, {"x": x})


def test_average_pool_refuses_a_ceil_window_shape_inference_miscounts() -> None:
    """k2 s2 p1 on 5 with ceil_mode: the last window would start in the end padding; ONNX Runtime drops it (as
    torch does), ONNX shape inference does not, and no constant can fit both shapes."""
    x = _image((1, 2, 5, 5))
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}
    model = one_op_model("AveragePool", {"x": x}, **attrs)
    with pytest.raises(MissingRule, match="ceil_mode"):
        differentiate(with_min_opset(model), "y0", ["x"])


def test_global_average_pool_vjp_matches_torch() -> None:
    x = _image((2, 3, 5, 6))
    model = one_op_model("GlobalAveragePool", {"x": x})
    check_against_torch(model, {"x": x}, lambda t: t.mean(dim=(2, 3), keepdim=True))


def test_global_max_pool_vjp_matches_torch() -> None:
    x = _image((2, 3, 5, 6))
    model = one_op_model("GlobalMaxPool", {"x": x})
    check_against_torch(model, {"x": x}, lambda t: t.amax(dim=(2, 3), keepdim=True))


def _lp_pool_reference(p: int, kernel: tuple[int, int], strides: tuple[int, int], pads: tuple[int, int, int, int]):
    """ONNX's LpPool, (Σ|x|^p)^(1/p) per window, in torch: lp_pool2d of |x| after explicit zero pads (zeros add
    nothing to the sum)."""
    return lambda t: F.lp_pool2d(F.pad(t.abs(), pads), p, kernel, strides)


# name: (input shape, LpPool attributes, torch pads (left, right, top, bottom))
LP_POOLS = {
    "p2_k2_s2": ((2, 3, 4, 6), {"p": 2, "kernel_shape": [2, 2], "strides": [2, 2]}, (0, 0, 0, 0)),
    "p2_k3_s1_overlap": ((1, 2, 5, 5), {"kernel_shape": [3, 3]}, (0, 0, 0, 0)),
    "p3_k3_s2_pads": (
        (1, 2, 6, 7),
        {"p": 3, "kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1]},
        (0, 1, 1, 0),
    ),
    "p1_k2_s1": ((1, 2, 4, 4), {"p": 1, "kernel_shape": [2, 2]}, (0, 0, 0, 0)),
}


@pytest.mark.parametrize("pool", list(LP_POOLS))
@pytest.mark.parametrize("opset", [17, 18])
def test_lp_pool_vjp_matches_torch(pool: str, opset: int) -> None:
    shape, attrs, pads = LP_POOLS[pool]
    x = _image(shape)
    x[0, 0, :2, :2] = 0.0  # a window of zeros: a zero norm, whose gradient torch (and the rule) make 0
    x[0, 1, 0, 0] = 0.0
    model = one_op_model("LpPool", {"x": x}, opset=opset, **attrs)
    strides = tuple(attrs.get("strides", [1, 1]))
    reference = _lp_pool_reference(attrs.get("p", 2), tuple(attrs["kernel_shape"]), strides, pads)
    check_against_torch(model, {"x": x}, reference)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_global_lp_pool_vjp_matches_torch(p: int) -> None:
    x = _image((2, 3, 4, 5))
    x[0, 0] = 0.0  # a zero channel
    x[1, 1, 0, :2] = 0.0
    model = one_op_model("GlobalLpPool", {"x": x}, p=p)
    check_against_torch(model, {"x": x}, lambda t: torch.linalg.vector_norm(t, ord=p, dim=(2, 3), keepdim=True))
