"""What the ONNX graph says about the model: its image input, its class-score output, and how it ends.

Inferred from the graph alone so that a model with no config still serves raw tensors; the config can override.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxplain.server.imaging.spec import Layout

_PASS_THROUGH_OPS = {"Identity", "Flatten", "Reshape", "Squeeze", "Cast"}
_PROBABILITY_OPS = {"Softmax", "Sigmoid"}
# Activations that end a classifier; gradient methods explain their input (the logits) unless asked otherwise.
_OUTPUT_ACTIVATIONS = {"Softmax", "LogSoftmax", "Sigmoid"}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
_COLOR_CHANNELS = (1, 3)
# Activation bytes per input byte assumed when shape inference cannot tell (deep CNNs run 10-100x).
_FALLBACK_ACTIVATION_RATIO = 50.0


class SignatureError(ValueError):
    """The graph is not an image classifier onnxplain can serve; the message says why."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | None, ...]
    dim_names: tuple[str, ...]


@dataclass(frozen=True)
class ModelSignature:
    input: TensorSpec
    output: TensorSpec
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    layout: Layout
    # The op that produces the output when it turns logits into probabilities ("Softmax", ...), else None.
    final_activation: str | None
    # Estimated bytes of activations per byte of input, for batch sizing.
    activation_ratio: float

    @property
    def fixed_batch(self) -> int | None:
        return self.input.shape[0]

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        """The input shape without the batch dimension (None for dynamic dimensions)."""
        return self.input.shape[1:]

    @property
    def channels(self) -> int | None:
        return self.sample_shape[0] if self.layout == "NCHW" else self.sample_shape[2]

    @property
    def spatial_size(self) -> tuple[int | None, int | None]:
        height, width = self.sample_shape[1:3] if self.layout == "NCHW" else self.sample_shape[0:2]
        return height, width

    @property
    def num_classes(self) -> int | None:
        dims = [d for d in self.output.shape[1:] if d != 1]
        return dims[0] if len(dims) == 1 and dims[0] is not None else None

    @property
    def class_axis(self) -> int:
        """The output axis holding the classes: the one after the batch that is not 1 ((N, K) or (N, K, 1, 1))."""
        dims = self.output.shape
        return next((axis for axis in range(1, len(dims)) if dims[axis] != 1), 1)


def read_signature(
    model: onnx.ModelProto,
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    layout: Layout | None = None,
) -> ModelSignature:
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_tensor_spec(value) for value in graph.input if value.name not in initializers)
    outputs = tuple(_tensor_spec(value) for value in graph.output)
    image_input = _pick(inputs, input_name, "input")
    output = _pick(outputs, output_name, "output")
    if len(inputs) != 1:
        raise SignatureError(f"the model has {len(inputs)} inputs; onnxplain serves models with one image input")
    if len(image_input.shape) != 4:
        raise SignatureError(f"input {image_input.name!r} has rank {len(image_input.shape)}; an image batch has rank 4")
    if image_input.dtype not in {onnx.TensorProto.DataType.Name(t).lower() for t in _FLOAT_TYPES}:
        raise SignatureError(f"input {image_input.name!r} is {image_input.dtype}; onnxplain needs a float image input")
    if len(output.shape) < 2 or sum(1 for d in output.shape[1:] if d != 1) > 1:
        raise SignatureError(
            f"output {output.name!r} has shape {_show(output.shape)}; a classifier outputs (batch, classes)"
        )
    return ModelSignature(
        input=image_input,
        output=output,
        inputs=inputs,
        outputs=outputs,
        layout=layout or infer_layout(image_input.shape),
        final_activation=_final_activation(graph, output.name),
        activation_ratio=_activation_ratio(model, image_input),
    )


def infer_layout(shape: tuple[int | None, ...]) -> Layout:
    """NHWC when only the last axis looks like colour channels, otherwise NCHW (the exporters' default)."""
    if shape[3] in _COLOR_CHANNELS and shape[1] not in _COLOR_CHANNELS:
        return "NHWC"
    return "NCHW"


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value.type.tensor_type
    dims = tensor_type.shape.dim
    return TensorSpec(
        name=value.name,
        dtype=onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower(),
        shape=tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims),
        dim_names=tuple(d.dim_param if d.HasField("dim_param") else "" for d in dims),
    )


def _pick(specs: tuple[TensorSpec, ...], name: str | None, kind: str) -> TensorSpec:
    if not specs:
        raise SignatureError(f"the model has no {kind}")
    if name is None:
        return specs[0]
    for spec in specs:
        if spec.name == name:
            return spec
    raise SignatureError(f"the config names {kind} {name!r}, but the model's {kind}s are {[s.name for s in specs]}")


def _final_activation(graph: onnx.GraphProto, output_name: str) -> str | None:
    node = output_activation(graph, output_name)
    return node.op_type if node is not None and node.op_type in _PROBABILITY_OPS else None


def output_activation(graph: onnx.GraphProto, output_name: str) -> onnx.NodeProto | None:
    """The Softmax, LogSoftmax or Sigmoid node that produces the output (through reshapes), if any."""
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(output_name)
    while node is not None and node.op_type in _PASS_THROUGH_OPS:
        node = producers.get(node.input[0])
    return node if node is not None and node.op_type in _OUTPUT_ACTIVATIONS else None


def _activation_ratio(model: onnx.ModelProto, image_input: TensorSpec) -> float:
    """Sum of the statically known intermediate tensor sizes over the input size (batch taken as 1)."""
    input_elements = np.prod([d or 224 for d in image_input.shape[1:]], dtype=np.float64)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        return _FALLBACK_ACTIVATION_RATIO
    total = 0.0
    for value in inferred.graph.value_info:
        dims = value.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") for d in dims[1:]):
            continue
        total += float(np.prod([d.dim_value for d in dims[1:]], dtype=np.float64))
    return max(1.0, total / input_elements) if total else _FALLBACK_ACTIVATION_RATIO


def _show(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
