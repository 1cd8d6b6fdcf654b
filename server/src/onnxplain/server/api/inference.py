"""inference.GRPCInferenceService, the Open Inference Protocol (KServe v2) over grpc.aio, beside ExplainService on
the same port, so OIP clients (tritonclient, KServe and MLServer clients) run the models unchanged.

This module only converts: OIP tensors to numpy and back; handlers/infer.py does the work. Inputs come as raw bytes
(raw_input_contents, little-endian) or typed contents (fp32_contents, ...); outputs always go back raw, the form
OIP calls faster. Errors are gRPC status codes, as for ExplainService (api/status.py).
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import Executor
from importlib.metadata import version
from typing import Any

import grpc
import numpy as np
from grpc_health.v1.health import aio as health_aio

from onnxplain.server.api.health import is_serving
from onnxplain.server.api.status import unary
from onnxplain.server.api.workers import in_worker
from onnxplain.server.errors import InvalidInput
from onnxplain.server.handlers.infer import (
    InferQuery,
    InferResult,
    NamedTensor,
    TensorInfo,
    infer,
    model_ready,
    model_tensors,
)
from onnxplain.server.inference.v2 import grpc_predict_v2_pb2 as oip_pb
from onnxplain.server.inference.v2 import grpc_predict_v2_pb2_grpc as oip_grpc
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings
from onnxplain.v1 import explain_service_pb2

SERVER_NAME = "onnxplain"
SERVER_VERSION = version("onnxplain-server")
PLATFORM = "onnxruntime_onnx"
# What this server offers beyond OIP, listed as its extensions: the explanation API on the same port.
EXTENSIONS = (explain_service_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name,)

# OIP datatype -> its numpy type on the wire (little-endian) and the typed-contents field that carries it (None: the
# type travels raw only). BYTES and BF16 have no numpy type and are refused.
DATATYPES: dict[str, tuple[np.dtype, str | None]] = {
    "BOOL": (np.dtype("?"), "bool_contents"),
    "UINT8": (np.dtype("u1"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"),
    "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"),
    "INT8": (np.dtype("i1"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"),
    "INT32": (np.dtype("<i4"), "int_contents"),
    "INT64": (np.dtype("<i8"), "int64_contents"),
    "FP16": (np.dtype("<f2"), None),
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
}
_DATATYPE_NAMES = {dtype.newbyteorder("="): name for name, (dtype, _) in DATATYPES.items()}
# The type of the values each typed-contents field holds.
_FIELD_DTYPES = {
    "bool_contents": np.dtype("?"),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}
# Requested-output parameters asking for Triton extensions this server does not implement.
_UNSUPPORTED_OUTPUT_PARAMETERS = ("classification",)


def add_inference(
    server: grpc.aio.Server,
    registry: ModelRegistry,
    settings: ServerSettings,
    executor: Executor,
    health: health_aio.HealthServicer,
) -> None:
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(registry, settings, executor, health), server)


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        settings: ServerSettings,
        executor: Executor,
        health: health_aio.HealthServicer,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._executor = executor
        self._health = health

    @unary
    async def ServerLive(self, request: oip_pb.ServerLiveRequest, context: Any) -> oip_pb.ServerLiveResponse:
        return oip_pb.ServerLiveResponse(live=True)

    @unary
    async def ServerReady(self, request: oip_pb.ServerReadyRequest, context: Any) -> oip_pb.ServerReadyResponse:
        """Ready exactly when grpc.health.v1 says SERVING: models loaded and warmed, not draining."""
        return oip_pb.ServerReadyResponse(ready=await is_serving(self._health))

    @unary
    async def ModelReady(self, request: oip_pb.ModelReadyRequest, context: Any) -> oip_pb.ModelReadyResponse:
        return oip_pb.ModelReadyResponse(ready=model_ready(self._registry, request.name, request.version))

    @unary
    async def ServerMetadata(
        self, request: oip_pb.ServerMetadataRequest, context: Any
    ) -> oip_pb.ServerMetadataResponse:
        return oip_pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    @unary
    async def ModelMetadata(self, request: oip_pb.ModelMetadataRequest, context: Any) -> oip_pb.ModelMetadataResponse:
        tensors = model_tensors(self._registry, request.name, request.version)
        return oip_pb.ModelMetadataResponse(
            name=tensors.name,
            versions=tensors.versions,
            platform=PLATFORM,
            inputs=[_tensor_metadata(info) for info in tensors.inputs],
            outputs=[_tensor_metadata(info) for info in tensors.outputs],
        )

    @unary
    async def ModelInfer(self, request: oip_pb.ModelInferRequest, context: Any) -> oip_pb.ModelInferResponse:
        query = infer_query(request)
        result = await in_worker(self._executor, functools.partial(infer, self._registry, query, self._settings.limits))
        return infer_response(result, request.id)


def infer_query(request: oip_pb.ModelInferRequest) -> InferQuery:
    for output in request.outputs:
        for parameter in _UNSUPPORTED_OUTPUT_PARAMETERS:
            if parameter in output.parameters:
                raise InvalidInput(f"output parameter {parameter!r} is not supported; ask for the plain output")
    return InferQuery(
        model=request.model_name,
        version=request.model_version,
        inputs=input_tensors(request),
        outputs=[output.name for output in request.outputs],
    )


def input_tensors(request: oip_pb.ModelInferRequest) -> list[NamedTensor]:
    raw = request.raw_input_contents
    if not raw:
        return [NamedTensor(tensor.name, _typed_array(tensor)) for tensor in request.inputs]
    if len(raw) != len(request.inputs):
        raise InvalidInput(f"the request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents")
    typed = [tensor.name for tensor in request.inputs if tensor.HasField("contents")]
    if typed:
        raise InvalidInput(f"inputs {typed} set contents although the request uses raw_input_contents")
    return [
        NamedTensor(tensor.name, _raw_array(tensor, data)) for tensor, data in zip(request.inputs, raw, strict=True)
    ]


def infer_response(result: InferResult, request_id: str) -> oip_pb.ModelInferResponse:
    response = oip_pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=request_id)
    for output in result.outputs:
        wire_dtype = output.array.dtype.newbyteorder("<")
        response.outputs.add(name=output.name, datatype=datatype_name(wire_dtype), shape=output.array.shape)
        response.raw_output_contents.append(np.ascontiguousarray(output.array, dtype=wire_dtype).tobytes())
    return response


def datatype_name(dtype: np.dtype) -> str:
    return _DATATYPE_NAMES[dtype.newbyteorder("=")]


def _tensor_metadata(info: TensorInfo) -> oip_pb.ModelMetadataResponse.TensorMetadata:
    return oip_pb.ModelMetadataResponse.TensorMetadata(
        name=info.name, datatype=datatype_name(info.dtype), shape=info.shape
    )


def _raw_array(tensor: oip_pb.ModelInferRequest.InferInputTensor, data: bytes) -> np.ndarray:
    dtype, _ = _datatype(tensor)
    shape, count = _shape(tensor)
    if count * dtype.itemsize != len(data):
        raise InvalidInput(
            f"input {tensor.name!r} of shape {shape} and datatype {tensor.datatype} needs "
            f"{count * dtype.itemsize} bytes of raw contents, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _typed_array(tensor: oip_pb.ModelInferRequest.InferInputTensor) -> np.ndarray:
    dtype, field = _datatype(tensor)
    if field is None:
        raise InvalidInput(f"input {tensor.name!r} is {tensor.datatype}, which travels only in raw_input_contents")
    shape, count = _shape(tensor)
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input {tensor.name!r} of shape {shape} needs {count} values in contents.{field}, got {len(values)}"
        )
    array = np.array(values, dtype=_FIELD_DTYPES[field])
    _check_integer_range(tensor, field, array, dtype)
    return array.astype(dtype.newbyteorder("=")).reshape(shape)


def _check_integer_range(
    tensor: oip_pb.ModelInferRequest.InferInputTensor, field: str, values: np.ndarray, dtype: np.dtype
) -> None:
    """A datatype narrower than its contents field (INT8 and INT16 in int_contents, UINT8 and UINT16 in uint_contents)
    cannot hold every value the field can: numpy would wrap the others (300 as INT8 is 44). Values too wide for the
    field itself never reach here: protobuf truncates them while parsing."""
    if dtype.kind not in "iu" or dtype.itemsize >= values.dtype.itemsize:
        return
    limits = np.iinfo(dtype)
    low, high = values.min(), values.max()
    if low < limits.min or high > limits.max:
        raise InvalidInput(
            f"input {tensor.name!r} is {tensor.datatype}, which holds {limits.min} to {limits.max}; "
            f"its contents.{field} has values from {low} to {high}"
        )


def _datatype(tensor: oip_pb.ModelInferRequest.InferInputTensor) -> tuple[np.dtype, str | None]:
    if tensor.datatype not in DATATYPES:
        raise InvalidInput(f"input {tensor.name!r} has datatype {tensor.datatype!r}; supported: {', '.join(DATATYPES)}")
    return DATATYPES[tensor.datatype]


def _shape(tensor: oip_pb.ModelInferRequest.InferInputTensor) -> tuple[list[int], int]:
    """The shape and its element count, checked before anything is allocated."""
    shape = list(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise InvalidInput(f"input {tensor.name!r} has shape {shape} with a negative dimension")
    # Refused here, not by the model: an empty tensor's other dimensions are unchecked by its (zero) byte count.
    if 0 in shape:
        raise InvalidInput(f"input {tensor.name!r} has shape {shape} with an empty dimension")
    return shape, math.prod(shape)
