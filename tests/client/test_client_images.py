from pathlib import Path

import numpy as np
import pytest

from onnxplain.client.errors import InvalidArgumentError
from onnxplain.client.images import to_image, to_images
from onnxplain.client.tensors import decode_tensor
from onnxplain.v1 import explain_service_pb2 as pb


def test_float_arrays_go_as_float32_tensors():
    image = to_image(np.ones((3, 4, 5), dtype=np.float64))
    assert image.WhichOneof("source") == "tensor"
    decoded = decode_tensor(image.tensor)
    assert decoded.dtype == np.float32
    assert decoded.shape == (3, 4, 5)


def test_array_likes_such_as_framework_tensors_are_accepted():
    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return np.zeros((3, 2, 2), dtype=np.float32)

    assert to_image(ArrayLike()).WhichOneof("source") == "tensor"


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64"])
def test_integer_arrays_go_in_their_own_dtype_for_integer_input_models(dtype):
    pixels = np.arange(48).reshape(4, 4, 3).astype(dtype)
    decoded = decode_tensor(to_image(pixels).tensor)
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, pixels)


def test_boolean_arrays_are_rejected():
    with pytest.raises(InvalidArgumentError, match="path or bytes"):
        to_image(np.zeros((4, 4, 3), dtype=bool))


@pytest.mark.parametrize("data", [b"\x89PNG...", bytearray(b"\x89PNG..."), memoryview(b"\x89PNG...")])
def test_bytes_go_as_encoded_images(data):
    assert to_image(data) == pb.Image(encoded=b"\x89PNG...")


def test_paths_are_read(tmp_path: Path):
    path = tmp_path / "cat.png"
    path.write_bytes(b"\x89PNG...")
    assert to_image(path).encoded == b"\x89PNG..."
    assert to_image(str(path)).encoded == b"\x89PNG..."


@pytest.mark.parametrize(
    ("name", "reason"), [("missing.png", "No such file or directory"), ("folder.png", "Is a directory")]
)
def test_a_file_that_cannot_be_read_is_named_with_the_reason(tmp_path: Path, name, reason):
    (tmp_path / "folder.png").mkdir()
    path = tmp_path / name
    with pytest.raises(InvalidArgumentError) as caught:
        to_image(path)
    assert caught.value.message == f"{path}: cannot read the image file: {reason}"
    assert isinstance(caught.value.__cause__, OSError)


def test_empty_bytes_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        to_image(b"")


def test_image_messages_pass_through():
    image = pb.Image(encoded=b"x")
    assert to_image(image) is image


@pytest.mark.parametrize("value", [None, 3, [[1.0]]])
def test_other_types_are_rejected(value):
    with pytest.raises(InvalidArgumentError, match="cannot send a"):
        to_image(value)


def test_one_image_is_single_and_a_list_or_tuple_is_not():
    assert to_images(b"x")[1] is True
    messages, single = to_images([b"x", b"y"])
    assert single is False
    assert [message.encoded for message in messages] == [b"x", b"y"]
    assert to_images((b"x",))[1] is False


def test_an_empty_list_is_rejected():
    with pytest.raises(ValueError, match="no images"):
        to_images([])
