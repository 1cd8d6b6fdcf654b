"""Turns what a caller holds (a file path, file bytes, a float array) into the wire Image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeAlias

import numpy as np

from onnxplain.client.tensors import encode_tensor
from onnxplain.v1 import explain_service_pb2 as pb

ImageLike: TypeAlias = np.ndarray | bytes | bytearray | memoryview | str | os.PathLike[str] | pb.Image
"""Encoded file bytes, a path to an image file, or a float array already in the model's input layout."""

ImagesLike: TypeAlias = ImageLike | list[ImageLike] | tuple[ImageLike, ...]
"""One image (one result back) or a list/tuple of them (a list of results back)."""


def to_image(image: ImageLike) -> pb.Image:
    """Paths and bytes go as encoded images the server preprocesses; float arrays go as raw model-input tensors."""
    if isinstance(image, pb.Image):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _encoded(bytes(image), "image bytes")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return _encoded(path.read_bytes(), str(path))
    if isinstance(image, np.ndarray) or hasattr(image, "__array__"):
        return pb.Image(tensor=encode_tensor(_float32_array(np.asarray(image))))
    raise TypeError(
        f"cannot send a {type(image).__name__} as an image: pass encoded image bytes, a path to an image "
        "file, or a float array in the model's input layout"
    )


def to_images(images: ImagesLike) -> tuple[list[pb.Image], bool]:
    """Returns the wire images and whether the caller passed a single image (and so expects a single result)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given")
        return [to_image(image) for image in images], False
    return [to_image(images)], True


def _encoded(data: bytes, what: str) -> pb.Image:
    if not data:
        raise ValueError(f"{what}: empty image")
    return pb.Image(encoded=data)


def _float32_array(array: np.ndarray) -> np.ndarray:
    # Integer arrays are almost always decoded pixels; sending them as a tensor would skip the model's preprocessing
    # and silently explain garbage, and the client deliberately has no image codec to encode them.
    if array.dtype.kind != "f":
        raise TypeError(
            f"a {array.dtype} array looks like decoded pixels, which the client cannot encode: pass the "
            "image file's path or bytes (the server preprocesses them), or a float array already "
            "preprocessed into the model's input layout, e.g. (3, 224, 224)"
        )
    return array.astype(np.float32, copy=False)
