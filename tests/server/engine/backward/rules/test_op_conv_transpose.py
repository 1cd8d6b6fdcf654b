"""ConvTranspose's input VJP (a Conv with the same weight) against torch autograd; the pads that output_shape and
auto_pad stand for are checked against central differences of ONNX Runtime's own forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.vjp import check_against_finite_differences, check_against_torch, one_op_model

# name: (input shape, weight shape [C_in, C_out/group, k, k], ConvTranspose attributes)
GEOMETRIES = {
    "stride1": ((1, 3, 5, 5), (3, 2, 3, 3), {}),
    "stride1_pads": ((1, 3, 5, 6), (3, 2, 3, 3), {"pads": [1, 1, 1, 1]}),
    "stride2_pads_output_padding": (
        (2, 3, 4, 5),
        (3, 2, 3, 3),
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
    ),
    "group2_stride1": ((1, 4, 5, 5), (4, 3, 3, 3), {"group": 2, "pads": [1, 0, 1, 0]}),
    "group2_stride2_output_padding": (
        (1, 4, 4, 4),
        (4, 1, 4, 4),
        {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 0]},
    ),
    "asymmetric_pads": ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "pads": [0, 1, 1, 2]}),
    "dilation2": (
        (1, 2, 4, 5),
        (2, 2, 3, 3),
        {"strides": [2, 1], "dilations": [2, 2], "pads": [1, 2, 0, 1], "output_padding": [1, 0]},
    ),
}


def _torch_conv_transpose(weight: np.ndarray, attrs: dict):
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])

    def conv_transpose(x: torch.Tensor) -> torch.Tensor:
        full = F.conv_transpose2d(
            x,
            torch.tensor(weight, dtype=torch.float64),
            stride=attrs.get("strides", [1, 1]),
            dilation=attrs.get("dilations", [1, 1]),
            groups=attrs.get("group", 1),
            output_padding=attrs.get("output_padding", [0, 0]),
        )
        return full[:, :, top : full.shape[2] - bottom, left : full.shape[3] - right]

    return conv_transpose


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv_transpose_input_vjp_matches_torch(geometry: str) -> None:
    x_shape, w_shape, attrs = GEOMETRIES[geometry]
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal(w_shape).astype(np.float32)
    bias = rng.standard_normal(w_shape[1] * attrs.get("group", 1)).astype(np.float32)
    model = one_op_model("ConvTranspose", {"x": x}, {"W": weight, "B": bias}, **attrs)
    check_against_torch(model, {"x": x}, _torch_conv_transpose(weight, attrs))


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2], "output_shape": [8, 7]},
        {"strides": [2, 2], "output_shape": [6, 5], "pads": [1, 1, 1, 1]},  # output_shape wins over pads
        {"strides": [2, 2], "output_shape": [7, 6], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"strides": [2, 2], "auto_pad": "VALID", "output_padding": [1, 1]},
        {"strides": [3, 3], "output_padding": [1, 2]},
    ],
    ids=[
        "output_shape",
        "output_shape_over_pads",
        "output_shape_same_upper",
        "same_upper",
        "same_lower",
        "valid",
        "s3",
    ],
)
def test_conv_transpose_pad_resolution_matches_onnxruntime(attrs: dict) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    weight = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    model = one_op_model("ConvTranspose", {"x": x}, {"W": weight}, **attrs)
    check_against_finite_differences(model, {"x": x})
