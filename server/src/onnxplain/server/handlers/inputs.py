"""Requests' images -> model input tensors: decode and preprocess encoded images, validate raw tensors.

Prepared tensors are float32 whatever the model's input type: a float input takes float32 tensors, an integer input
(uint8 pixels, the normalisation inside the graph) integer tensors whose values its type holds. The session feeds
them in the input's own type (engine/session.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from onnxplain.server.engine.cancel import CANCEL_POLL_SECONDS, CancelToken
from onnxplain.server.errors import InvalidInput
from onnxplain.server.handlers.schema import ImageInput
from onnxplain.server.imaging.decode import check_pixels, decode_image
from onnxplain.server.imaging.geometry import Geometry
from onnxplain.server.imaging.header import probe_size
from onnxplain.server.imaging.layout import spatial_size
from onnxplain.server.imaging.preprocess import preprocess
from onnxplain.server.imaging.render import tensor_to_image
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.settings import Limits


@dataclass(frozen=True)
class PreparedImage:
    tensor: np.ndarray
    geometry: Geometry | None
    segments: np.ndarray | None = None
    # The decoded original image (uint8 HxWxC) for encoded images; None for raw tensors.
    decoded: np.ndarray | None = None
    layout: str = "NCHW"

    @cached_property
    def picture(self) -> np.ndarray:
        """What overlays are drawn on: the decoded original, or for raw tensors a rendering of the tensor, made only
        when a request draws (1.5 ms of a 224x224 saliency call otherwise)."""
        return self.decoded if self.decoded is not None else tensor_to_image(self.tensor, self.layout)


# Decoding is CPU-bound and a hostile image can take seconds: at most one decode per core at a time, so request
# threads waiting for a turn stay cancellable and other work keeps its cores.
_DECODE_TURNS = threading.BoundedSemaphore(os.cpu_count() or 1)


def prepare_images(
    model: LoadedModel, images: list[ImageInput], limits: Limits, token: CancelToken
) -> list[PreparedImage]:
    """The images as model inputs; every count and size limit is checked before the first image is decoded, and a
    cancelled or expired call stops between images."""
    if not images:
        raise InvalidInput("the request has no images")
    if len(images) > limits.max_images_per_request:
        raise InvalidInput(f"the request has {len(images)} images; the limit is {limits.max_images_per_request}")
    _check_request_pixels(images, limits)
    prepared = []
    for index, image in enumerate(images):
        token.raise_if_cancelled()
        prepared.append(_prepare(model, image, index, limits, token))
    return prepared


def _check_request_pixels(images: list[ImageInput], limits: Limits) -> None:
    total = 0
    for index, image in enumerate(images):
        if image.encoded is None:
            continue
        try:
            height, width = probe_size(image.encoded)
            check_pixels(height, width, limits.max_image_pixels)
        except InvalidInput as error:
            raise InvalidInput(f"image {index}: {error}") from error
        total += height * width
    if total > limits.max_request_pixels:
        raise InvalidInput(
            f"the request's images have {total} pixels together, above the limit of {limits.max_request_pixels} per "
            "request: send them in several requests"
        )


@contextmanager
def _decoding_turn(token: CancelToken) -> Iterator[None]:
    while not _DECODE_TURNS.acquire(timeout=CANCEL_POLL_SECONDS):
        token.raise_if_cancelled()
    try:
        yield
    finally:
        _DECODE_TURNS.release()


def _prepare(model: LoadedModel, image: ImageInput, index: int, limits: Limits, token: CancelToken) -> PreparedImage:
    try:
        if image.encoded is not None:
            prepared = _from_encoded(model, image.encoded, limits, token)
        elif image.tensor is not None:
            prepared = _from_tensor(model, image.tensor, limits)
        else:
            raise InvalidInput("the image has neither encoded bytes nor a tensor")
        if image.segments is None:
            return prepared
        size = spatial_size(prepared.tensor.shape, model.signature.layout)
        return replace(prepared, segments=_checked_segments(image.segments, size))
    except InvalidInput as error:
        raise InvalidInput(f"image {index}: {error}") from error


def _from_encoded(model: LoadedModel, data: bytes, limits: Limits, token: CancelToken) -> PreparedImage:
    spec = model.preprocessing
    if spec is None:
        raise InvalidInput(
            f"model {model.name!r} has no preprocessing config, so it takes raw tensors only: send a "
            f"{_tensor_dtype(model)} tensor shaped {_describe(model.signature.sample_shape)}, or add a preprocessing "
            "section to its config.yaml"
        )
    with _decoding_turn(token):
        picture = decode_image(data, spec.color, limits.max_image_pixels)
    tensor, geometry = preprocess(picture, spec)
    return PreparedImage(tensor=tensor, geometry=geometry, decoded=picture)


def _from_tensor(model: LoadedModel, tensor: np.ndarray, limits: Limits) -> PreparedImage:
    expected = model.signature.sample_shape
    _check_dtype(model, tensor)
    if tensor.ndim != len(expected) or any(
        e is not None and e != d for e, d in zip(expected, tensor.shape, strict=True)
    ):
        raise InvalidInput(
            f"tensor shape {list(tensor.shape)} does not match the model input {_describe(expected)} "
            f"(layout {model.signature.layout}, without the batch dimension)"
        )
    if min(tensor.shape) < 1:
        raise InvalidInput(f"tensor shape {list(tensor.shape)} has an empty dimension")
    if tensor.size > limits.max_image_pixels * 4:
        raise InvalidInput(f"tensor has {tensor.size} values, above the limit of {limits.max_image_pixels * 4}")
    if model.signature.input.is_integer:
        tensor = _integer_values(tensor, model.signature.input.numpy_dtype)
    elif not np.isfinite(tensor).all():
        raise InvalidInput("tensor contains NaN or infinite values")
    return PreparedImage(tensor=tensor, geometry=None, layout=model.signature.layout)


def _tensor_dtype(model: LoadedModel) -> str:
    """What raw tensors for the model are: float32 for any float input, the input's own type for an integer one."""
    spec = model.signature.input
    return spec.numpy_dtype.name if spec.is_integer else "float32"


def _check_dtype(model: LoadedModel, tensor: np.ndarray) -> None:
    """A float input takes float32, an integer input integers: the other kind is almost always a mix-up (raw pixels
    for a float model, normalised values for an integer one) that a cast would hide."""
    integer_input = model.signature.input.is_integer
    accepted = np.issubdtype(tensor.dtype, np.integer) if integer_input else tensor.dtype == np.float32
    if accepted:
        return
    wanted = _tensor_dtype(model)
    hint = (
        "the pixels as integers (a float tensor is usually values normalised already, which the graph does itself)"
        if integer_input
        else "values already preprocessed into the model's input (an integer array is usually undecoded pixels)"
    )
    raise InvalidInput(
        f"tensor dtype must be {wanted}, got {tensor.dtype}: model {model.name!r} takes {wanted} tensors of {hint}"
    )


def _integer_values(tensor: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The tensor as float32, after checking that every value fits the input type (casting would wrap it)."""
    limits = np.iinfo(dtype)
    low, high = int(tensor.min()), int(tensor.max())
    if low < limits.min or high > limits.max:
        raise InvalidInput(
            f"tensor values span [{low}, {high}]; the model's {dtype.name} input holds {limits.min} to {limits.max}"
        )
    return tensor.astype(np.float32)


def _describe(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _checked_segments(segments: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if segments.shape != tuple(size):
        raise InvalidInput(
            f"segments shape {list(segments.shape)} does not match the model input's spatial size {list(size)}"
        )
    if not np.issubdtype(segments.dtype, np.integer):
        raise InvalidInput(f"segments must be integers (int32, int64 or uint8), got {segments.dtype}")
    if segments.min() < 0:
        raise InvalidInput("segments must be non-negative ids")
    return segments.astype(np.int32)
