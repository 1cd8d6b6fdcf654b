"""Conversion between numpy arrays and the wire Tensor: raw little-endian, row-major bytes plus dtype and shape."""

from __future__ import annotations

import math

import numpy as np

from onnxplain.client.errors import InvalidArgumentError
from onnxplain.v1 import tensor_pb2

_WIRE_DTYPES: dict[int, np.dtype] = {
    tensor_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    tensor_pb2.DATA_TYPE_UINT8: np.dtype("u1"),
    tensor_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
}
_DATA_TYPES: dict[np.dtype, int] = {dtype: code for code, dtype in _WIRE_DTYPES.items()}


def encode_tensor(array: np.ndarray) -> tensor_pb2.Tensor:
    """Any supported dtype, in any byte order or memory layout, is sent as contiguous little-endian bytes."""
    array = np.asarray(array)
    wire_dtype = array.dtype.newbyteorder("<")
    if wire_dtype not in _DATA_TYPES:
        supported = ", ".join(sorted(str(dtype.name) for dtype in _DATA_TYPES))
        raise InvalidArgumentError(f"cannot send a {array.dtype} array; supported dtypes: {supported}")
    data = np.ascontiguousarray(array, dtype=wire_dtype).tobytes()
    return tensor_pb2.Tensor(dtype=_DATA_TYPES[wire_dtype], shape=array.shape, data=data)


def decode_tensor(tensor: tensor_pb2.Tensor) -> np.ndarray:
    """A writable, native-byte-order copy, so the array outlives the message and numpy code can modify it."""
    if tensor.dtype not in _WIRE_DTYPES:
        raise ValueError(f"tensor has an unknown dtype {tensor.dtype}")
    wire_dtype = _WIRE_DTYPES[tensor.dtype]
    shape = tuple(tensor.shape)
    expected = math.prod(shape) * wire_dtype.itemsize
    if len(tensor.data) != expected:
        raise ValueError(
            f"tensor of shape {shape} and dtype {wire_dtype.name} needs {expected} bytes, got {len(tensor.data)}"
        )
    return np.frombuffer(tensor.data, dtype=wire_dtype).reshape(shape).astype(wire_dtype.newbyteorder("="))
