import numpy as np
import pytest

from onnxplain.client.errors import InvalidArgumentError
from onnxplain.client.tensors import decode_tensor, encode_tensor
from onnxplain.v1 import tensor_pb2


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "uint8", "int32", "int64"])
def test_every_wire_dtype_round_trips(dtype):
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    decoded = decode_tensor(encode_tensor(array))
    assert decoded.dtype == np.dtype(dtype)
    assert decoded.shape == (2, 3, 4)
    np.testing.assert_array_equal(decoded, array)


def test_bytes_are_little_endian_row_major_whatever_the_input_layout():
    array = np.arange(6, dtype=">f4").reshape(2, 3).T  # big-endian and not C-contiguous
    tensor = encode_tensor(array)
    assert tensor.dtype == tensor_pb2.DATA_TYPE_FLOAT32
    assert list(tensor.shape) == [3, 2]
    assert tensor.data == np.ascontiguousarray(array, dtype="<f4").tobytes()


def test_decoded_arrays_are_writable_copies():
    tensor = encode_tensor(np.zeros((2, 2), dtype=np.float32))
    decoded = decode_tensor(tensor)
    decoded[0, 0] = 1.0
    assert decode_tensor(tensor)[0, 0] == 0.0


def test_a_scalar_has_an_empty_shape():
    assert decode_tensor(encode_tensor(np.float32(2.5))) == np.float32(2.5)


def test_unsupported_dtypes_are_rejected():
    with pytest.raises(InvalidArgumentError, match="bool"):
        encode_tensor(np.zeros(3, dtype=bool))


def test_a_size_mismatch_is_reported():
    tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[2, 2], data=b"\0" * 12)
    with pytest.raises(ValueError, match="needs 16 bytes, got 12"):
        decode_tensor(tensor)


def test_an_unknown_dtype_is_reported():
    with pytest.raises(ValueError, match="unknown dtype"):
        decode_tensor(tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_UNSPECIFIED))
