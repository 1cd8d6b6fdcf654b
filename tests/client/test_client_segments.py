"""Segment maps: sent with each image as int32 tensors by both clients, refused locally when they would be
silently changed by the cast, and read back as Explanation.segments."""

import asyncio

import numpy as np
import pytest

from onnxplain.client import AsyncClient, Client
from onnxplain.client.errors import InvalidArgumentError
from onnxplain.client.images import with_segments
from onnxplain.client.responses import parse_explanation
from onnxplain.client.tensors import decode_tensor, encode_tensor
from onnxplain.v1 import explain_service_pb2 as pb
from onnxplain.v1 import tensor_pb2


def sent_segments(image: pb.Image) -> np.ndarray | None:
    if not image.HasField("segments"):
        return None
    assert image.segments.dtype == tensor_pb2.DATA_TYPE_INT32
    return decode_tensor(image.segments)


def test_one_image_sends_its_map_as_int32(server_address, fake_service):
    segments = np.array([[0, 0, 1], [2, 2, 1]], dtype=np.int64)
    with Client(server_address, timeout=10) as client:
        client.explain("resnet", b"png", method="lime", segments=segments, num_samples=10)
    (request,) = fake_service.requests
    np.testing.assert_array_equal(sent_segments(request.images[0]), segments)
    assert request.images[0].encoded == b"png"
    assert request.parameters["num_samples"].integer == 10


def test_a_list_of_images_takes_one_map_or_none_each(server_address, fake_service):
    first = np.array([[3, 4]], dtype=np.uint8)

    async def scenario():
        async with AsyncClient(server_address, timeout=10) as client:
            await client.explain("resnet", [b"a", b"b"], method="lime", segments=[first, None])

    asyncio.run(scenario())
    (request,) = fake_service.requests
    np.testing.assert_array_equal(sent_segments(request.images[0]), first)
    assert sent_segments(request.images[1]) is None


def test_explain_stream_sends_segments_too(server_address, fake_service):
    segments = np.eye(3, dtype=np.int32)
    with Client(server_address, timeout=10) as client:
        list(client.explain_stream("resnet", b"png", method="kernel_shap", segments=segments))
    np.testing.assert_array_equal(sent_segments(fake_service.requests[0].images[0]), segments)


def test_a_caller_built_image_is_not_modified():
    image = pb.Image(encoded=b"png")
    (sent,) = with_segments([image], np.zeros((2, 2), dtype=np.int32), single=True)
    assert not image.HasField("segments")
    assert sent.encoded == b"png" and sent.HasField("segments")


def test_no_segments_leaves_the_images_alone():
    images = [pb.Image(encoded=b"a")]
    assert with_segments(images, None, single=True) is images


@pytest.mark.parametrize(
    ("segments", "single", "error", "message"),
    [
        (np.zeros((2, 2), dtype=np.float32), True, InvalidArgumentError, "must be integers"),
        (np.zeros((2, 2), dtype=bool), True, InvalidArgumentError, "must be integers"),
        (np.zeros((1, 2, 2), dtype=np.int32), True, ValueError, "must be (H, W)"),
        (np.array([[0, -1]]), True, ValueError, "between 0 and"),
        (np.array([[0, 2**31]], dtype=np.int64), True, ValueError, "between 0 and"),
        ([np.zeros((2, 2), dtype=np.int32)], True, InvalidArgumentError, "not a list"),
        (np.zeros((2, 2), dtype=np.int32), False, InvalidArgumentError, "one (H, W) array or None per image"),
        ([np.zeros((2, 2), dtype=np.int32)], False, ValueError, "1 segment maps for 2 images"),
    ],
)
def test_segments_that_a_cast_would_change_are_refused(segments, single, error, message):
    images = [pb.Image(encoded=b"a")] if single else [pb.Image(encoded=b"a"), pb.Image(encoded=b"b")]
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        with_segments(images, segments, single)


def test_explanation_reads_segments_back_or_none():
    segments = np.array([[0, 1], [1, 2]], dtype=np.int32)
    attribution = pb.TargetAttribution(class_index=0, attribution=encode_tensor(np.zeros((2, 2), np.float32)))
    response = pb.ExplainResponse(method="lime")
    scores = encode_tensor(np.zeros(3, np.float32))
    with_map = pb.ImageExplanation(attributions=[attribution], scores=scores, segments=encode_tensor(segments))
    without = pb.ImageExplanation(attributions=[attribution], scores=scores)
    read = parse_explanation(with_map, response, keep_target_axis=False).segments
    np.testing.assert_array_equal(read, segments)
    assert read.dtype == np.int32
    assert parse_explanation(without, response, keep_target_axis=False).segments is None
