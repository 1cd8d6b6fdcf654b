"""Make a forward graph ready for the backward walk: a fixed image size, an opset every rule can emit for, and
static shapes from ONNX shape inference."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import version_converter

from onnxplain.server.engine.backward.context import Shape

# Rules emit ScatterElements with reduction="add" (opset 16) and input-form axes (opset 13): older models are
# converted up. ONNX's upgrade adapters cover the ops classifiers use.
MIN_OPSET = 16


class ConversionError(ValueError):
    """The model's opset is older than the rules need and ONNX's version converter could not raise it."""


def model_opset(model: onnx.ModelProto) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 1)


def with_min_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = model_opset(model)
    if opset >= MIN_OPSET:
        return model
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as error:  # the converter raises bare RuntimeErrors naming the op it lacks an adapter for
        raise ConversionError(f"converting the model from opset {opset} to {MIN_OPSET} failed: {error}") from error
    if opset < 11:
        _keep_legacy_resize_semantics(converted)
    return converted


def _keep_legacy_resize_semantics(model: onnx.ModelProto) -> None:
    """Upsample and Resize-10 sample at x_out / scale (asymmetric, floor for nearest). The converter's Resize-11
    leaves the new attributes at their defaults (half_pixel), which changes the forward result: restore them."""
    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        present = {attribute.name for attribute in node.attribute}
        if "coordinate_transformation_mode" not in present:
            node.attribute.append(onnx.helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
        if "nearest_mode" not in present:
            node.attribute.append(onnx.helper.make_attribute("nearest_mode", "floor"))


def fix_input_shape(model: onnx.ModelProto, input_name: str, sample_shape: Sequence[int]) -> None:
    """Set every dimension of the input but the batch, so shape inference resolves all shapes but the batch."""
    value = next(v for v in model.graph.input if v.name == input_name)
    dims = value.type.tensor_type.shape.dim
    for dim, size in zip(dims[1:], sample_shape, strict=True):
        dim.Clear()
        dim.dim_value = int(size)
    if not dims[0].HasField("dim_value"):
        dims[0].Clear()
        dims[0].dim_param = "batch"


def infer_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Shape], dict[str, int]]:
    """The model with inferred value infos, and every known tensor's static shape and element type."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    shapes: dict[str, Shape] = {}
    dtypes: dict[str, int] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = value.type.tensor_type
        dtypes[value.name] = tensor_type.elem_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    # The graph's value infos are not needed past this point and would go stale as rules add nodes.
    del graph.value_info[:]
    return inferred, shapes, dtypes
