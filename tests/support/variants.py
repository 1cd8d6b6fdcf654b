"""The forms real exporters and deployment tools give a classifier, made at test time from a float ONNX file: what
onnxruntime.quantization makes of it (static QDQ, static QOperator, dynamic), ONNX Runtime's float16 converter,
a dynamic batch written as dim_value -1 (Paddle2ONNX), stripped output shapes, an extra regression output before
the class scores, and uint8 pixels with the preprocessing inside the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static
from onnxruntime.transformers.float16 import convert_float_to_float16

from support.models import IR_VERSION


class _Images(CalibrationDataReader):
    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self._feeds = iter({input_name: image[None]} for image in images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantized(float_file: Path, calibration: np.ndarray, input_name: str = "input") -> dict[str, onnx.ModelProto]:
    """The three int8 forms of a float model file, by name ("qdq", "qoperator", "dynamic"), written beside it.

    Quantized with reduce_range (7-bit weights): on x86 CPUs without VNNI, ONNX Runtime's u8-by-s8 kernels add pairs
    of products in saturating int16, so with full-range weights its own integer results are inexact."""
    paths = {form: float_file.with_name(f"{float_file.stem}.{form}.onnx") for form in ("qdq", "qoperator", "dynamic")}
    for form, quant_format in (("qdq", QuantFormat.QDQ), ("qoperator", QuantFormat.QOperator)):
        reader = _Images(input_name, calibration)
        quantize_static(float_file, paths[form], reader, quant_format=quant_format, per_channel=True, reduce_range=True)
    quantize_dynamic(float_file, paths["dynamic"], per_channel=True, reduce_range=True)
    return {form: onnx.load(path) for form, path in paths.items()}


def float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The whole graph in float16, float16 input and output included."""
    converted = convert_float_to_float16(_copy(model), keep_io_types=False)
    converted.ir_version = IR_VERSION
    return converted


def batch_minus_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every tensor's batch dimension written as dim_value -1, value infos included."""
    inferred = onnx.shape_inference.infer_shapes(_copy(model))
    graph = inferred.graph
    for value in (*graph.input, *graph.output, *graph.value_info):
        batch = value.type.tensor_type.shape.dim[0]
        batch.Clear()
        batch.dim_value = -1
    return inferred


def stripped_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """The outputs' declared shapes removed, as stripping tools leave them."""
    stripped = _copy(model)
    for output in stripped.graph.output:
        output.type.tensor_type.ClearField("shape")
    return stripped


def regression_output_first(model: onnx.ModelProto, classes: int) -> onnx.ModelProto:
    """A 4-value box regressor on the logits as the first output, and the class scores as a Softmax after it."""
    extra = _copy(model)
    graph = extra.graph
    logits = graph.output[0].name
    weights = np.random.default_rng(11).normal(size=(classes, 4)).astype(np.float32)
    graph.initializer.append(numpy_helper.from_array(weights, "box_weights"))
    graph.node.extend(
        [
            helper.make_node("MatMul", [logits, "box_weights"], ["boxes"]),
            helper.make_node("Softmax", [logits], ["probabilities"], axis=1),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
        ]
    )
    return extra


def uint8_pixels(model: onnx.ModelProto, mean: float = 127.5, std: float = 64.0) -> onnx.ModelProto:
    """uint8 NHWC pixels in, then Cast, Transpose to NCHW, (x - mean) / std in the graph, then the NCHW model."""
    prepended = _copy(model)
    graph = prepended.graph
    image = graph.input[0]
    channels, height, width = (d.dim_value for d in image.type.tensor_type.shape.dim[1:])
    inner = image.name
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(mean, np.float32), "pixel_mean"),
            numpy_helper.from_array(np.asarray(std, np.float32), "pixel_std"),
        ]
    )
    preprocessing = [
        helper.make_node("Cast", ["pixels"], ["pixels_float"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels_float"], ["pixels_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["pixels_nchw", "pixel_mean"], ["centred"]),
        helper.make_node("Div", ["centred", "pixel_std"], [inner]),
    ]
    nodes = [*preprocessing, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", height, width, channels]))
    return prepended


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied
