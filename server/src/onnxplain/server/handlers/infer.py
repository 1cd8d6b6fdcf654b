"""Plain inference for the Open Inference Protocol: the model's own forward pass on a batch of its input tensor (no
preprocessing, no explanation), the tensors it takes and returns, and whether it is ready.

The batch dimension is reported as variable (-1) for every model: the session splits and pads batches for graphs
exported with a fixed one. Scores come back as float32 in the model's output shape, whatever the graph computes in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.errors import InvalidInput, Unavailable
from onnxplain.server.handlers.response_size import check_response_size, infer_response_bytes
from onnxplain.server.observability.names import shortened
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.repository.signature import TensorSpec
from onnxplain.server.settings import Limits

VARIABLE = -1
_OUTPUT_DTYPE = np.dtype(np.float32)
# Raw tensors may hold this many values per pixel of the image limit, as in handlers/inputs.py.
_VALUES_PER_PIXEL = 4


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: np.dtype
    # Including the batch dimension; VARIABLE where any size is accepted.
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelTensors:
    name: str
    # The versions ready to serve, oldest first.
    versions: list[str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


@dataclass(frozen=True)
class NamedTensor:
    name: str
    array: np.ndarray


@dataclass(frozen=True)
class InferQuery:
    model: str
    version: str
    inputs: list[NamedTensor]
    # The outputs asked for by name; empty: all of them.
    outputs: list[str]


@dataclass(frozen=True)
class InferResult:
    model: str
    version: str
    outputs: list[NamedTensor]


def model_ready(registry: ModelRegistry, name: str, version: str) -> bool:
    """Whether the version (empty: any version) can serve now; NotFound for unknown models and versions."""
    try:
        registry.get(name, version)
    except Unavailable:
        return False
    return True


def model_tensors(registry: ModelRegistry, name: str, version: str) -> ModelTensors:
    model = registry.get(name, version)
    ready = [s.version for s in registry.statuses() if s.name == name and s.state == "ready"]
    return ModelTensors(model.name, ready, [_input_info(model)], [_output_info(model)])


def infer(registry: ModelRegistry, query: InferQuery, limits: Limits, token: CancelToken) -> InferResult:
    model = registry.get(query.model, query.version)
    output = _output_info(model)
    _check_outputs(model, output, query.outputs)
    batch = _checked_batch(model, query.inputs, limits)
    # The response must fit in one message: checked before the pass, or after it when only the pass tells the
    # output's size (a symbolic dimension).
    if model.num_classes is not None:
        _check_size(model, len(batch), model.num_classes, limits)
    scores = model.session.run(batch, token)
    if model.num_classes is None:
        _check_size(model, len(batch), scores.size // len(batch), limits)
    outputs = [NamedTensor(output.name, scores.reshape(len(batch), *output.shape[1:]))]
    return InferResult(model.name, model.version, outputs)


def _check_outputs(model: LoadedModel, output: TensorInfo, requested: list[str]) -> None:
    """The model has one output: it may be asked for by name, once."""
    if len(requested) > 1:
        raise InvalidInput(
            f"the request asks for {len(requested)} outputs; model {model.name!r} has one, {output.name!r}"
        )
    if requested and requested[0] != output.name:
        raise InvalidInput(
            f"model {model.name!r} has no output {shortened(requested[0])!r}; its output is {output.name!r}"
        )


def _check_size(model: LoadedModel, images: int, values_per_image: int, limits: Limits) -> None:
    estimate = infer_response_bytes(model, images, values_per_image)
    check_response_size(estimate, limits.max_message_bytes, "ModelInfer", "send a smaller batch")


def _input_info(model: LoadedModel) -> TensorInfo:
    spec = model.signature.input
    return TensorInfo(spec.name, spec.numpy_dtype, _batched_shape(spec))


def _output_info(model: LoadedModel) -> TensorInfo:
    return TensorInfo(model.signature.output.name, _OUTPUT_DTYPE, _batched_shape(model.signature.output))


def _batched_shape(spec: TensorSpec) -> tuple[int, ...]:
    return (VARIABLE, *(VARIABLE if d is None else d for d in spec.shape[1:]))


def _checked_batch(model: LoadedModel, inputs: list[NamedTensor], limits: Limits) -> np.ndarray:
    expected = _input_info(model)
    names = [tensor.name for tensor in inputs]
    if names != [expected.name]:
        given = shortened(", ".join(repr(name) for name in names))
        raise InvalidInput(f"model {model.name!r} takes one input named {expected.name!r}, got {len(names)}: {given}")
    batch = inputs[0].array
    if batch.dtype != expected.dtype:
        raise InvalidInput(f"input {expected.name!r} must be {expected.dtype.name}, got {batch.dtype.name}")
    if batch.ndim != len(expected.shape) or any(
        want not in (VARIABLE, got) for want, got in zip(expected.shape, batch.shape, strict=True)
    ):
        raise InvalidInput(
            f"input {expected.name!r} has shape {list(batch.shape)}; the model takes {list(expected.shape)} "
            f"(-1: any size)"
        )
    if batch.size == 0:
        raise InvalidInput(f"input {expected.name!r} has shape {list(batch.shape)} with an empty dimension")
    if len(batch) > limits.max_images_per_request:
        raise InvalidInput(f"the batch has {len(batch)} images; the limit is {limits.max_images_per_request}")
    values, limit = batch[0].size, limits.max_image_pixels * _VALUES_PER_PIXEL
    if values > limit:
        raise InvalidInput(f"each image has {values} values, above the limit of {limit}")
    # Integer values are within the input type's range by construction: the array has that type. Float values are
    # checked as ExplainService checks raw tensors (handlers/inputs.py).
    if np.issubdtype(batch.dtype, np.floating) and not np.isfinite(batch).all():
        raise InvalidInput(f"input {expected.name!r} contains NaN or infinite values")
    return batch
