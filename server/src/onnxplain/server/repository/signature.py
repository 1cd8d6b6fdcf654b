"""What the ONNX graph says about the model: its image input, its class-score output, and how it ends.

Inferred from the graph alone so that a model with no config still serves raw tensors; the config can override.
Stripping tools leave outputs without a declared shape (or with rank 0): ONNX shape inference fills them in, and
where it cannot, the loader's probe run does (ModelSignature.with_output_shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxplain.server.imaging.spec import Layout
from onnxplain.server.observability.names import shortened

_PASS_THROUGH_OPS = {"Identity", "Flatten", "Reshape", "Squeeze", "Cast"}
_PROBABILITY_OPS = {"Softmax", "Sigmoid"}
# Activations that end a classifier; gradient methods explain their input (the logits) unless asked otherwise.
_OUTPUT_ACTIVATIONS = {"Softmax", "LogSoftmax", "Sigmoid"}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
# uint8 pixels and the like, the normalisation inside the graph (a Cast to float first).
_INTEGER_TYPES = {
    onnx.TensorProto.UINT8,
    onnx.TensorProto.INT8,
    onnx.TensorProto.UINT16,
    onnx.TensorProto.INT16,
    onnx.TensorProto.INT32,
    onnx.TensorProto.INT64,
}
_IMAGE_DTYPES = {onnx.TensorProto.DataType.Name(t).lower() for t in _FLOAT_TYPES | _INTEGER_TYPES}
_COLOR_CHANNELS = (1, 3)
# Activation bytes per input byte assumed when shape inference cannot tell (deep CNNs run 10-100x).
_FALLBACK_ACTIVATION_RATIO = 50.0


class SignatureError(ValueError):
    """The graph is not an image classifier onnxplain can serve; the message says why."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    # () when neither the graph nor shape inference knows the shape.
    shape: tuple[int | None, ...]
    dim_names: tuple[str, ...]

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx.TensorProto.DataType.Value(self.dtype.upper())))

    @property
    def is_integer(self) -> bool:
        return onnx.TensorProto.DataType.Value(self.dtype.upper()) in _INTEGER_TYPES

    @property
    def holds_class_scores(self) -> bool:
        """Whether the shape is (batch, classes), possibly with axes of 1 ((N, K, 1, 1)); True while unknown."""
        if not self.shape:
            return True
        return len(self.shape) >= 2 and sum(1 for d in self.shape[1:] if d != 1) <= 1


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
        dims = self.output.shape[1:]
        return math.prod(dims) if dims and None not in dims else None

    @property
    def class_axis(self) -> int:
        """The output axis holding the classes: the one after the batch that is not 1 ((N, K) or (N, K, 1, 1))."""
        dims = self.output.shape
        return next((axis for axis in range(1, len(dims)) if dims[axis] != 1), 1)

    @property
    def heads(self) -> tuple[str, ...]:
        """The outputs a request can explain: the default first, then every other whose graph shape is float
        (batch, classes). An output whose shape only a run would tell is left out (a request may still name it)."""
        others = (o.name for o in self.outputs if o.name != self.output.name and o.shape and not _head_problem(o))
        return (self.output.name, *others)

    def head_output(self, name: str) -> TensorSpec:
        """Output `name`, to be explained as a head. SignatureError names the outputs for an unknown name, and says
        why an output is not float (batch, classes) scores; an output whose shape is unknown passes until
        with_output_shape completes it."""
        output = next((spec for spec in self.outputs if spec.name == name), None)
        if output is None:
            raise SignatureError(
                f"the model has no output {shortened(name)!r}; its outputs are {_listed(self.outputs)}"
            )
        problem = _head_problem(output)
        if problem is not None:
            raise SignatureError(f"{problem}; the outputs that hold class scores are {list(self.heads)}")
        return output

    def with_head(self, graph: onnx.GraphProto, output: TensorSpec) -> ModelSignature:
        """The signature explaining `output` (from head_output) of `graph` instead of the default output."""
        return replace(self, output=output, final_activation=_final_activation(graph, output.name))

    def with_output_shape(self, probed: tuple[int, ...]) -> ModelSignature:
        """The signature with the output shaped as `probed`, the output of one run, but with the input's batch
        dimension: completes an output the graph and shape inference left unknown or dynamic."""
        shape = (self.input.shape[0], *probed[1:])
        names = self.output.dim_names
        if len(names) != len(shape):
            names = (self.input.dim_names[0], *("" for _ in shape[1:]))
        output = replace(self.output, shape=shape, dim_names=names)
        _check_class_scores(output)
        outputs = tuple(output if spec.name == output.name else spec for spec in self.outputs)
        return replace(self, output=output, outputs=outputs)


def read_signature(
    model: onnx.ModelProto,
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    layout: Layout | None = None,
) -> ModelSignature:
    graph = model.graph
    inferred = _inferred_graph(model)
    initializers = {init.name for init in graph.initializer}
    inputs = tuple(_tensor_spec(value) for value in graph.input if value.name not in initializers)
    inferred_outputs = {value.name: value for value in inferred.output} if inferred is not None else {}
    outputs = tuple(_tensor_spec(value, inferred_outputs.get(value.name)) for value in graph.output)
    image_input = _pick(inputs, input_name, "input")
    if len(inputs) != 1:
        raise SignatureError(f"the model has {len(inputs)} inputs; onnxplain serves models with one image input")
    if len(image_input.shape) != 4:
        raise SignatureError(f"input {image_input.name!r} has rank {len(image_input.shape)}; an image batch has rank 4")
    if image_input.dtype not in _IMAGE_DTYPES:
        raise SignatureError(
            f"input {image_input.name!r} is {image_input.dtype}; onnxplain needs a float or integer image input"
        )
    output = _pick(outputs, output_name, "output") if output_name is not None else _class_output(graph, outputs)
    _check_class_scores(output)
    return ModelSignature(
        input=image_input,
        output=output,
        inputs=inputs,
        outputs=outputs,
        layout=layout or infer_layout(image_input.shape),
        final_activation=_final_activation(graph, output.name),
        activation_ratio=_activation_ratio(inferred, image_input),
    )


def infer_layout(shape: tuple[int | None, ...]) -> Layout:
    """NHWC when only the last axis looks like colour channels, otherwise NCHW (the exporters' default)."""
    if shape[3] in _COLOR_CHANNELS and shape[1] not in _COLOR_CHANNELS:
        return "NHWC"
    return "NCHW"


def _tensor_spec(value: onnx.ValueInfoProto, inferred: onnx.ValueInfoProto | None = None) -> TensorSpec:
    """The declared type, or the inferred one where the declaration has no shape (or rank 0) or no element type."""
    tensor_type = value.type.tensor_type
    if inferred is not None and not (tensor_type.shape.dim and tensor_type.elem_type):
        tensor_type = inferred.type.tensor_type
    dims = tensor_type.shape.dim
    return TensorSpec(
        name=value.name,
        dtype=onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower(),
        shape=tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims),
        dim_names=tuple(d.dim_param if d.HasField("dim_param") else "" for d in dims),
    )


def _class_output(graph: onnx.GraphProto, outputs: tuple[TensorSpec, ...]) -> TensorSpec:
    """The one output, or among several the one the graph shows to be class scores: computed by Softmax, LogSoftmax
    or Sigmoid (through reshapes) and shaped (batch, classes). Taking the first output instead explained a face
    model's box regressor as a 4-class classifier; without such evidence the model is refused, not guessed."""
    if len(outputs) <= 1:
        return _pick(outputs, None, "output")
    candidates = [o for o in outputs if o.holds_class_scores and output_activation(graph, o.name) is not None]
    if len(candidates) == 1:
        return candidates[0]
    listed = _listed(outputs)
    evidence = (
        f"{len(candidates)} of them ({', '.join(repr(o.name) for o in candidates)}) look like"
        if candidates
        else "none of them is computed by Softmax, LogSoftmax or Sigmoid as"
    )
    raise SignatureError(
        f"the model has {len(outputs)} outputs ({listed}) and {evidence} class scores of shape (batch, classes); "
        "name the class-score output in the model's config.yaml: output: {name: <output>}"
    )


def _check_class_scores(output: TensorSpec) -> None:
    problem = _shape_problem(output)
    if problem is not None:
        raise SignatureError(problem)


def _shape_problem(output: TensorSpec) -> str | None:
    if output.holds_class_scores:
        return None
    return f"output {output.name!r} has shape {_show(output.shape)}; a classifier outputs (batch, classes)"


def _head_problem(output: TensorSpec) -> str | None:
    """Why an output cannot be explained as class scores, or None: its scores must be floats and its shape
    (batch, classes), as far as the graph tells."""
    dtype = onnx.TensorProto.DataType.Value(output.dtype.upper())
    if dtype != onnx.TensorProto.UNDEFINED and dtype not in _FLOAT_TYPES:
        return f"output {output.name!r} is {output.dtype}; class scores are floating point"
    return _shape_problem(output)


def _listed(outputs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{o.name!r} {_show(o.shape)}" for o in outputs)


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


def _inferred_graph(model: onnx.ModelProto) -> onnx.GraphProto | None:
    """The graph after ONNX shape inference, or None when it fails. A declared rank-0 output shape would win over the
    inferred one, so it is cleared first, on a copy made only then (the graph holds the weights)."""
    if any(_rank_zero(value) for value in model.graph.output):
        model = _copy_without_rank_zero_outputs(model)
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception:
        return None


def _rank_zero(value: onnx.ValueInfoProto) -> bool:
    tensor_type = value.type.tensor_type
    return tensor_type.HasField("shape") and not tensor_type.shape.dim


def _copy_without_rank_zero_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in copy.graph.output:
        if _rank_zero(value):
            value.type.tensor_type.ClearField("shape")
    return copy


def _activation_ratio(inferred: onnx.GraphProto | None, image_input: TensorSpec) -> float:
    """Sum of the statically known intermediate tensor sizes over the input size (batch taken as 1)."""
    if inferred is None:
        return _FALLBACK_ACTIVATION_RATIO
    input_elements = np.prod([d or 224 for d in image_input.shape[1:]], dtype=np.float64)
    total = 0.0
    for value in inferred.value_info:
        dims = value.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") for d in dims[1:]):
            continue
        total += float(np.prod([d.dim_value for d in dims[1:]], dtype=np.float64))
    return max(1.0, total / input_elements) if total else _FALLBACK_ACTIVATION_RATIO


def _show(shape: tuple[int | None, ...]) -> str:
    if not shape:
        return "(shape unknown)"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
