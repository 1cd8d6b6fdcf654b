"""Resize's VJP (transposed interpolation matrices measured on ONNX Runtime) against torch.nn.functional.interpolate
where torch has the same interpolation, and against central differences of ONNX Runtime's forward where it has
not (Resize is linear in X, so the differences are exact up to float32 rounding)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch.nn.functional as F
from onnx import helper, numpy_helper
from support.vjp import IR_VERSION, check_against_finite_differences, check_against_torch, one_op_model

from onnxplain.server.engine.backward.builder import MissingRule, differentiate


def _resize_model(x: np.ndarray, scales=None, sizes=None, opset: int = 17, **attrs):
    """A Resize of graph input x with constant scales or sizes (roi absent)."""
    constants = {}
    if scales is not None:
        constants["scales"] = np.asarray(scales, np.float32)
    if sizes is not None:
        constants["sizes"] = np.asarray(sizes, np.int64)
    order = ["x", "", "scales" if scales is not None else "", "sizes" if sizes is not None else ""]
    return one_op_model("Resize", {"x": x}, constants, input_order=order, opset=opset, **attrs)


def _image(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(6).standard_normal(shape).astype(np.float32)


# name: (input shape, Resize scales, sizes and attributes, the torch twin's interpolate keywords)
TORCH_TWINS = {
    "nearest_asymmetric_floor_x2": (
        (1, 2, 4, 5),
        {
            "scales": [1, 1, 2, 2],
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        },
        {"scale_factor": 2, "mode": "nearest"},
    ),
    "nearest_asymmetric_floor_sizes": (
        (1, 2, 6, 5),
        {
            "sizes": [1, 2, 4, 8],
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        },
        {"size": (4, 8), "mode": "nearest"},
    ),
    "linear_half_pixel_x2": (
        (2, 2, 4, 5),
        {"scales": [1, 1, 2, 2], "mode": "linear"},
        {"scale_factor": 2, "mode": "bilinear", "align_corners": False},
    ),
    "linear_half_pixel_sizes": (
        (1, 3, 5, 7),
        {"sizes": [1, 3, 8, 4], "mode": "linear"},
        {"size": (8, 4), "mode": "bilinear", "align_corners": False},
    ),
    "linear_align_corners": (
        (1, 2, 4, 5),
        {"sizes": [1, 2, 9, 7], "mode": "linear", "coordinate_transformation_mode": "align_corners"},
        {"size": (9, 7), "mode": "bilinear", "align_corners": True},
    ),
    "cubic_half_pixel_x2": (
        (1, 2, 5, 4),
        {"scales": [1, 1, 2, 2], "mode": "cubic", "cubic_coeff_a": -0.75},
        {"scale_factor": 2, "mode": "bicubic", "align_corners": False},
    ),
    "cubic_half_pixel_sizes": (
        (1, 2, 6, 5),
        {"sizes": [1, 2, 9, 3], "mode": "cubic", "cubic_coeff_a": -0.75},
        {"size": (9, 3), "mode": "bicubic", "align_corners": False},
    ),
    "cubic_align_corners": (
        (1, 1, 4, 6),
        {
            "sizes": [1, 1, 7, 8],
            "mode": "cubic",
            "cubic_coeff_a": -0.75,
            "coordinate_transformation_mode": "align_corners",
        },
        {"size": (7, 8), "mode": "bicubic", "align_corners": True},
    ),
    "width_only": (
        (1, 2, 4, 5),
        {"sizes": [1, 2, 4, 9], "mode": "linear"},
        {"size": (4, 9), "mode": "bilinear", "align_corners": False},
    ),
    "linear_1d": (
        (2, 3, 6),
        {"scales": [1, 1, 2], "mode": "linear"},
        {"scale_factor": 2, "mode": "linear", "align_corners": False},
    ),
}


@pytest.mark.parametrize("case", TORCH_TWINS)
def test_resize_vjp_matches_torch(case: str) -> None:
    shape, resize, interpolate = TORCH_TWINS[case]
    x = _image(shape)
    check_against_torch(_resize_model(x, **resize), {"x": x}, lambda t: F.interpolate(t, **interpolate))


def test_resize_vjp_with_symbolic_batch() -> None:
    x = _image((3, 2, 4, 5))
    model = _resize_model(x, scales=[1, 1, 2, 0.5], mode="cubic")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    check_against_torch(model, {"x": x}, lambda t: F.interpolate(t, scale_factor=(2, 0.5), mode="bicubic"))


def test_resize_vjp_with_axes_matches_torch() -> None:
    x = _image((1, 2, 4, 5))
    model = _resize_model(x, scales=[2, 3], axes=[2, 3], mode="linear", opset=18)
    check_against_torch(model, {"x": x}, lambda t: F.interpolate(t, scale_factor=(2, 3), mode="bilinear"))


@pytest.mark.parametrize(
    "resize",
    [
        {"scales": [1, 1, 2, 2], "mode": "nearest"},  # half_pixel, round_prefer_floor
        {"sizes": [1, 2, 7, 3], "mode": "nearest", "nearest_mode": "round_prefer_ceil"},
        {
            "sizes": [1, 2, 9, 7],
            "mode": "nearest",
            "nearest_mode": "ceil",
            "coordinate_transformation_mode": "align_corners",
        },
        {"scales": [1, 1, 1.5, 0.6], "mode": "linear"},
        {"sizes": [1, 2, 1, 8], "mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        {"scales": [1, 1, 1.7, 2], "mode": "linear", "coordinate_transformation_mode": "asymmetric"},
        {"sizes": [1, 2, 8, 9], "mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1},
        {"sizes": [1, 2, 3, 2], "mode": "linear", "antialias": 1, "opset": 18},
        {"sizes": [1, 2, 2, 3], "mode": "cubic", "antialias": 1, "opset": 18},
        {
            "scales": [1, 1, 2, 2],
            "mode": "linear",
            "coordinate_transformation_mode": "half_pixel_symmetric",
            "opset": 19,
        },
    ],
    ids=[
        "nearest_default",
        "nearest_round_prefer_ceil",
        "nearest_ceil_align_corners",
        "linear_fractional_scales",
        "linear_pytorch_half_pixel_to_1",
        "linear_asymmetric",
        "cubic_exclude_outside",
        "linear_antialias",
        "cubic_antialias",
        "half_pixel_symmetric",
    ],
)
def test_resize_vjp_matches_onnxruntime(resize: dict) -> None:
    x = _image((1, 2, 5, 6))
    check_against_finite_differences(_resize_model(x, **resize), {"x": x})


def test_resize_vjp_with_sizes_computed_from_the_input_shape() -> None:
    """The legacy torch exporter builds sizes as Concat(Shape(x)[:2], [H', W']); the inferred output shape stands in."""
    x = _image((2, 3, 4, 5))
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], end=2),
        helper.make_node("Concat", ["shape", "spatial"], ["sizes"], axis=0),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear"),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic_sizes",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([7, 3], np.int64), "spatial")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    check_against_torch(model, {"x": x}, lambda t: F.interpolate(t, size=(7, 3), mode="bilinear"))


def test_resize_of_channels_is_refused() -> None:
    x = _image((1, 2, 4, 4))
    model = _resize_model(x, scales=[1, 2, 2, 2], mode="nearest")
    with pytest.raises(MissingRule, match="two last axes"):
        differentiate(model, "y0", ["x"])


def _upsample_model(x: np.ndarray, opset: int, scales: list[float], mode: str) -> onnx.ModelProto:
    """Upsample as opsets 7-8 (scales attribute) and 9 (scales input) define it. The builder raises such models to
    opset 16, where ONNX's version converter has turned Upsample into Resize; no Upsample rule is involved."""
    if opset < 9:
        return one_op_model("Upsample", {"x": x}, opset=opset, scales=scales, mode=mode)
    return one_op_model("Upsample", {"x": x}, {"scales": np.asarray(scales, np.float32)}, opset=opset, mode=mode)


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("scales", [[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 3.0, 2.0]])
def test_upsample_nearest_converted_to_resize_matches_torch(opset: int, scales: list[float]) -> None:
    x = _image((1, 2, 3, 4))
    model = _upsample_model(x, opset, scales, "nearest")
    check_against_torch(model, {"x": x}, lambda t: F.interpolate(t, scale_factor=tuple(scales[2:]), mode="nearest"))


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample_linear_converted_to_resize_matches_onnxruntime(opset: int) -> None:
    # Upsample's linear mode samples at x_out / scale (asymmetric), which torch's interpolate has no mode for: central
    # differences of ONNX Runtime's Upsample itself, at the model's own opset, are the reference.
    x = _image((1, 2, 3, 4))
    check_against_finite_differences(_upsample_model(x, opset, [1.0, 1.0, 2.0, 1.5], "linear"), {"x": x})
