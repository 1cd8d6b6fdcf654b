"""Make a forward graph ready for the backward walk: a fixed image size, an opset every rule can emit for, float32
arithmetic, the shape arithmetic folded, and static shapes from ONNX shape inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter

from onnxplain.server.engine.backward.context import Shape
from onnxplain.server.engine.backward.folding import (
    TRIAL_BATCHES,
    TrialShapes,
    fold_static,
    has_shape_ops,
    shape_sources,
)
from onnxplain.server.engine.backward.graph import model_opset
from onnxplain.server.engine.backward.precision import as_float32
from onnxplain.server.engine.backward.quantized import dequantize_operators
from onnxplain.server.engine.session import create_session

# Rules emit ScatterElements with reduction="add" (opset 16) and input-form axes (opset 13): older models are
# converted up. ONNX's upgrade adapters cover the ops classifiers use.
MIN_OPSET = 16


class ConversionError(ValueError):
    """The model's opset is older than the rules need and ONNX's version converter could not raise it."""


_FOLD_ROUNDS = 3


def prepare_forward(model: onnx.ModelProto, input_name: str, sample_shape: Sequence[int]) -> onnx.ModelProto:
    """The model (modified, or a converted copy) ready for the walk at images of `sample_shape` (no batch): every
    dimension but the batch fixed, raised to MIN_OPSET, in float32, and everything static at this image size folded.
    Shapes needed to fold the shape arithmetic come from shape inference, or from a probe run where it gives up."""
    fix_input_shape(model, input_name, sample_shape)
    model = with_min_opset(model)
    # Before folding, which would turn the dequantized weights into float copies of every weight.
    dequantize_operators(model)
    as_float32(model, input_name)
    fold_everything_static(model, ShapeProbe(input_name, tuple(sample_shape)))
    return model


def fold_everything_static(model: onnx.ModelProto, probe: ShapeProbe | None = None) -> None:
    """Fold constants, then the shape arithmetic and If conditions that shapes make static (folding.py). Each round
    can expose more: an inlined If's branch, shapes known once pads are constants."""
    fold_static(model)
    for _ in range(_FOLD_ROUNDS):
        if not has_shape_ops(model):
            return
        if not fold_static(model, trial_shapes(model, probe)):
            return


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
    """Set every dimension of the input but the batch, so shape inference resolves all shapes but the batch.
    Dimensions written as a non-positive `dim_value` (Paddle2ONNX writes -1 for a dynamic batch) are unknown:
    shape inference would otherwise take -1 as a size and rules would emit constant shapes holding it."""
    _clear_unknown_dims(model.graph)
    value = next(v for v in model.graph.input if v.name == input_name)
    dims = value.type.tensor_type.shape.dim
    for dim, size in zip(dims[1:], sample_shape, strict=True):
        dim.Clear()
        dim.dim_value = int(size)
    if not dims[0].HasField("dim_value"):
        dims[0].Clear()
        dims[0].dim_param = "batch"


def _clear_unknown_dims(graph: onnx.GraphProto) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info):
        for index, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.Clear()
                dim.dim_param = f"{value.name}_dim{index}"


# Initializers larger than this are weights: shape inference needs their dims, never their values.
_WEIGHT_BYTES = 4096


@dataclass(frozen=True)
class ShapeProbe:
    """An image input and its sample shape (no batch): lets shape inference fall back to running the model."""

    input_name: str
    sample_shape: tuple[int, ...]


def infer_shapes(
    model: onnx.ModelProto, probe: ShapeProbe | None = None
) -> tuple[onnx.ModelProto, dict[str, Shape], dict[str, int]]:
    """The model (the same object) and every known tensor's static shape and element type. Inference runs on a copy
    whose weights keep their dims but not their data: ONNX's inference serializes the model it is given, and for a
    ResNet-50 that was most of the build time. Where ONNX's inference leaves a dimension other than the batch
    unknown (torch's legacy exporter writes `expand(n, -1, -1)` of a ViT's class token through shape arithmetic it
    cannot follow), `probe` runs the model to measure the shapes."""
    shapes, dtypes = _inferred(_weightless(model))
    unknown = [
        out
        for node in model.graph.node
        for out in node.output
        if out and (out not in shapes or None in shapes[out][1:])
    ]
    if unknown and probe is not None:
        runs = _measured_shapes(model, probe, unknown, dtypes, _probe_batches(model, probe, (1, 2)))
        shapes.update(
            (name, tuple(d if all(run[name][axis] == d for run in runs) else None for axis, d in enumerate(shape)))
            for name, shape in (runs[0] if runs else {}).items()
        )
    return model, shapes, dtypes


def trial_shapes(model: onnx.ModelProto, probe: ShapeProbe | None = None) -> list[TrialShapes]:
    """The shapes of tensors at each of folding's TRIAL_BATCHES, where every dimension is known there: ONNX's
    inference with that batch size written on the graph inputs whose first dimension is not fixed, and where it
    gives up on a tensor whose shape folding reads, `probe` runs at that batch size. A dimension that is unknown at
    a symbolic batch is not taken for the batch: it can be a multiple of it (a Swin's attention windows)."""
    light = _weightless(model)
    for value in light.graph.output:  # a declared output shape must not contradict the trial batch
        value.type.tensor_type.ClearField("shape")
    del light.graph.value_info[:]
    batched = [
        value.type.tensor_type.shape.dim[0]
        for value in light.graph.input
        if value.type.tensor_type.shape.dim and not value.type.tensor_type.shape.dim[0].HasField("dim_value")
    ]
    sizes = TRIAL_BATCHES if batched else TRIAL_BATCHES[:1]  # a fixed batch: one inference serves every trial
    trials: list[dict[str, tuple[int, ...]]] = []
    dtypes: dict[str, int] = {}
    for batch in sizes:
        for dim in batched:
            dim.Clear()
            dim.dim_value = batch
        shapes, dtypes = _inferred(light)
        trials.append({name: shape for name, shape in shapes.items() if None not in shape})  # type: ignore[misc]
    produced = {out for node in model.graph.node for out in node.output}
    unknown = [name for name in shape_sources(model) if name in produced and any(name not in t for t in trials)]
    if unknown and probe is not None:
        runs = _measured_shapes(model, probe, unknown, dtypes, _probe_batches(model, probe, sizes))
        if len(runs) == 1:  # the image's batch is fixed: the same at every trial
            runs *= len(trials)
        for trial, run in zip(trials, runs, strict=False):  # no runs when the probe failed
            trial.update(run)
    return trials * (len(TRIAL_BATCHES) // len(trials))


def _weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large initializers keep their dims but not their data."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    for initializer in light.graph.initializer:
        if initializer.ByteSize() > _WEIGHT_BYTES:
            for field in ("raw_data", "float_data", "double_data", "int32_data", "int64_data"):
                initializer.ClearField(field)
    return light


def _inferred(light: onnx.ModelProto) -> tuple[dict[str, Shape], dict[str, int]]:
    """ONNX's inference: each tensor's shape (None for an unknown dimension) and element type."""
    graph = onnx.shape_inference.infer_shapes(light, data_prop=True).graph
    shapes: dict[str, Shape] = {}
    dtypes: dict[str, int] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = value.type.tensor_type
        dtypes[value.name] = tensor_type.elem_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim
            )
    return shapes, dtypes


def _probe_batches(model: onnx.ModelProto, probe: ShapeProbe, wanted: tuple[int, ...]) -> tuple[int, ...]:
    """The batch sizes a probe runs at: `wanted`, or the model's own batch size alone when it is fixed."""
    image = next(value for value in model.graph.input if value.name == probe.input_name)
    batch_dim = image.type.tensor_type.shape.dim[0]
    return (batch_dim.dim_value,) if batch_dim.HasField("dim_value") else wanted


def _measured_shapes(
    model: onnx.ModelProto, probe: ShapeProbe, names: list[str], dtypes: dict[str, int], batches: tuple[int, ...]
) -> list[dict[str, tuple[int, ...]]]:
    """Shapes of `names` from running the model on random images, at each batch size; none when the run fails."""
    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    del probed.graph.output[:]
    probed.graph.output.extend(onnx.helper.make_tensor_value_info(n, dtypes.get(n, 0), None) for n in names)
    try:
        session = create_session(probed, ort.SessionOptions(), ["CPUExecutionProvider"])
        runs = [
            session.run(
                names, {probe.input_name: np.random.default_rng(0).random((b, *probe.sample_shape), np.float32)}
            )
            for b in batches
        ]
    except Exception:  # the probe is a fallback: without it the rules say which shape they missed
        return []
    return [{name: tuple(value.shape) for name, value in zip(names, run, strict=True)} for run in runs]
