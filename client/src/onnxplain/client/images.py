"""Turns what a caller holds (a file path, file bytes, a float or integer array) into the wire Image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeAlias

import numpy as np

from onnxplain.client.errors import InvalidArgumentError
from onnxplain.client.tensors import encode_tensor
from onnxplain.v1 import explain_service_pb2 as pb

ImageLike: TypeAlias = np.ndarray | bytes | bytearray | memoryview | str | os.PathLike[str] | pb.Image
"""Encoded file bytes, a path to an image file, or an array in the model's input layout: float for a float input
(already preprocessed), integer (e.g. uint8 pixels) for a model whose input is integer."""

ImagesLike: TypeAlias = ImageLike | list[ImageLike] | tuple[ImageLike, ...]
"""One image (one result back) or a list/tuple of them (a list of results back)."""

SegmentMap: TypeAlias = np.ndarray
"""An (H, W) integer array of segment ids at model-input resolution (after the model's preprocessing)."""

SegmentMaps: TypeAlias = list[SegmentMap | None] | tuple[SegmentMap | None, ...]
"""One segment map (or None) per image of a list."""

SegmentsLike: TypeAlias = SegmentMap | SegmentMaps | None


def to_image(image: ImageLike) -> pb.Image:
    """Paths and bytes go as encoded images the server preprocesses; arrays go as raw model-input tensors, float ones
    as float32 and integer ones in their own dtype. The server knows the model's input type and refuses a tensor of
    the wrong kind (an integer array for a float input is most likely undecoded pixels) with INVALID_ARGUMENT."""
    if isinstance(image, pb.Image):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _encoded(bytes(image), "image bytes")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return _encoded(_read_image_file(path), str(path))
    if isinstance(image, np.ndarray) or hasattr(image, "__array__"):
        message = pb.Image()
        message.tensor.CopyFrom(encode_tensor(_tensor_array(np.asarray(image))))
        return message
    raise InvalidArgumentError(
        f"cannot send a {type(image).__name__} as an image: pass encoded image bytes, a path to an image "
        "file, or an array in the model's input layout"
    )


def to_images(images: ImagesLike) -> tuple[list[pb.Image], bool]:
    """Returns the wire images and whether the caller passed a single image (and so expects a single result)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidArgumentError("no images given")
        return [to_image(image) for image in images], False
    return [to_image(images)], True


def with_segments(images: list[pb.Image], segments: SegmentsLike, single: bool) -> list[pb.Image]:
    """The images with their segment maps attached as int32 tensors; the caller's messages are not modified.

    A single image takes one map; a list of images takes a list with one map or None per image."""
    if segments is None:
        return images
    if single:
        if isinstance(segments, (list, tuple)):
            raise InvalidArgumentError("segments for a single image must be one (H, W) integer array, not a list")
        maps: list[SegmentMap | None] = [segments]
    else:
        if not isinstance(segments, (list, tuple)):
            raise InvalidArgumentError(
                "segments for a list of images must be a list with one (H, W) array or None per image"
            )
        if len(segments) != len(images):
            raise InvalidArgumentError(
                f"{len(segments)} segment maps for {len(images)} images; give one (or None) per image"
            )
        maps = list(segments)
    attached = []
    for index, (image, segment_map) in enumerate(zip(images, maps, strict=True)):
        if segment_map is None:
            attached.append(image)
            continue
        copy = pb.Image()
        copy.CopyFrom(image)
        copy.segments.CopyFrom(encode_tensor(_int32_segments(segment_map, index)))
        attached.append(copy)
    return attached


def _int32_segments(segments: np.ndarray, index: int) -> np.ndarray:
    # Rejected here rather than cast: casting floats or out-of-range ids would silently merge segments.
    array = np.asarray(segments)
    if array.ndim != 2:
        raise InvalidArgumentError(f"segments of image {index} must be (H, W), got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise InvalidArgumentError(f"segments of image {index} must be integers, got {array.dtype}")
    info = np.iinfo(np.int32)
    if array.size and (array.min() < 0 or array.max() > info.max):
        raise InvalidArgumentError(f"segments of image {index} must be ids between 0 and {info.max}")
    return array.astype(np.int32)


def _read_image_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidArgumentError(f"{path}: cannot read the image file: {error.strerror or error}") from error


def _encoded(data: bytes, what: str) -> pb.Image:
    if not data:
        raise InvalidArgumentError(f"{what}: empty image")
    return pb.Image(encoded=data)


def _tensor_array(array: np.ndarray) -> np.ndarray:
    """Floats as float32; integers as they are, for models whose input is integer (the client does not know the
    model, so whether an integer array fits is the server's call)."""
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind not in "iu":
        raise InvalidArgumentError(
            f"cannot send a {array.dtype} array as an image: pass the image file's path or bytes (the server "
            "preprocesses them), a float array already preprocessed into the model's input layout, e.g. "
            "(3, 224, 224), or an integer (uint8) array for a model whose input is integer"
        )
    return array
