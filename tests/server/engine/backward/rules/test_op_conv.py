"""Conv's input VJP against torch autograd, over the geometries that trip transposed convolutions: odd sizes under
stride 2, dilation, groups, asymmetric (TF SAME) pads and every auto_pad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.vjp import check_against_torch, one_op_model

from onnxplain.server.engine.backward.builder import MissingRule, differentiate
from onnxplain.server.engine.backward.prepare import with_min_opset

# name: (input shape, weight shape, Conv attributes)
GEOMETRIES = {
    "stride2_even": ((1, 3, 8, 8), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "stride2_odd": ((2, 3, 7, 7), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "dilation2": ((1, 2, 9, 9), (3, 2, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "group2": ((1, 4, 6, 6), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "depthwise_stride2": ((1, 4, 7, 7), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "tf_same_asymmetric": ((1, 3, 8, 8), (4, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),
    "same_upper_k4_s2": ((1, 2, 7, 7), (3, 2, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "same_lower_k4_s2": ((1, 2, 7, 7), (3, 2, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    "same_upper_k3_s1": ((1, 2, 6, 6), (3, 2, 3, 3), {"auto_pad": "SAME_UPPER"}),
    "valid_s2": ((1, 2, 8, 8), (3, 2, 3, 3), {"strides": [2, 2], "auto_pad": "VALID"}),
    "pointwise_stride2": ((1, 3, 7, 7), (5, 3, 1, 1), {"strides": [2, 2]}),
    "non_square": ((1, 2, 5, 9), (3, 2, 3, 2), {"strides": [2, 1], "pads": [1, 0, 0, 1]}),
    "everything": (
        (2, 4, 11, 10),
        (6, 2, 3, 3),
        {"strides": [2, 3], "dilations": [2, 1], "group": 2, "pads": [1, 2, 3, 0]},
    ),
}


def _explicit_pads(shape: tuple[int, ...], kernel: tuple[int, ...], attrs: dict) -> list[int]:
    """The ONNX pads [top, left, bottom, right] that auto_pad stands for (the TF SAME rule), as the reference."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        return attrs.get("pads", [0, 0, 0, 0])
    if auto_pad == "VALID":
        return [0, 0, 0, 0]
    strides = attrs.get("strides", [1, 1])
    totals = [max(0, (-(-n // s) - 1) * s + k - n) for n, k, s in zip(shape[2:], kernel, strides, strict=True)]
    small = [t // 2 for t in totals]
    large = [t - t // 2 for t in totals]
    return small + large if auto_pad == "SAME_UPPER" else large + small


def _torch_conv(weight: np.ndarray, attrs: dict, pads: list[int]):
    top, left, bottom, right = pads

    def conv(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (left, right, top, bottom))
        return F.conv2d(
            padded,
            torch.tensor(weight, dtype=torch.float64),
            stride=attrs.get("strides", [1, 1]),
            dilation=attrs.get("dilations", [1, 1]),
            groups=attrs.get("group", 1),
        )

    return conv


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv_input_vjp_matches_torch(geometry: str, opset: int) -> None:
    x_shape, w_shape, attrs = GEOMETRIES[geometry]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal(w_shape).astype(np.float32)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    model = one_op_model("Conv", {"x": x}, {"W": weight, "B": bias}, opset=opset, **attrs)
    pads = _explicit_pads(x_shape, w_shape[2:], attrs)
    check_against_torch(model, {"x": x}, _torch_conv(weight, attrs, pads))


def test_conv_input_vjp_with_symbolic_batch() -> None:
    x_shape, w_shape, attrs = GEOMETRIES["everything"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal(w_shape).astype(np.float32)
    model = one_op_model("Conv", {"x": x}, {"W": weight}, **attrs)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    check_against_torch(model, {"x": x}, _torch_conv(weight, attrs, attrs["pads"]))


def test_conv1d_input_vjp_matches_torch() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 10)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3)).astype(np.float32)
    model = one_op_model("Conv", {"x": x}, {"W": weight}, strides=[2], pads=[0, 1])
    check_against_torch(
        model, {"x": x}, lambda t: F.conv1d(F.pad(t, (0, 1)), torch.tensor(weight, dtype=torch.float64), stride=2)
    )


def test_conv_backward_is_a_symmetric_pad_conv_transpose() -> None:
    """The CUDA provider runs ConvTranspose with symmetric pads only; asymmetric forward pads go to a Slice."""
    x = np.zeros((1, 3, 8, 8), np.float32)
    model = one_op_model("Conv", {"x": x}, {"W": np.ones((4, 3, 3, 3), np.float32)}, strides=[2, 2], pads=[0, 0, 1, 1])
    built = differentiate(with_min_opset(model), "y0", ["x"])
    backward = [node for node in built.model.graph.node if node.op_type == "ConvTranspose"]
    assert len(backward) == 1
    attrs = {a.name: list(a.ints) for a in backward[0].attribute}
    assert attrs["pads"] == [0, 0, 0, 0]
    assert "output_shape" not in attrs
    assert "Slice" in {node.op_type for node in built.model.graph.node}


def test_conv_weight_gradient_is_refused_by_name() -> None:
    x = np.zeros((1, 2, 5, 5), np.float32)
    model = one_op_model("Conv", {"x": x, "W": np.ones((3, 2, 3, 3), np.float32)})
    with pytest.raises(MissingRule, match="'W'"):
        differentiate(model, "y0", ["x", "W"])
