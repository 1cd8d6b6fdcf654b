"""Requests' images -> model input tensors: decode and preprocess encoded images, validate raw tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.handlers.schema import ImageInput
from onnxplain.server.imaging.decode import decode_image
from onnxplain.server.imaging.geometry import Geometry
from onnxplain.server.imaging.preprocess import preprocess
from onnxplain.server.imaging.render import tensor_to_image
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.settings import Limits


@dataclass(frozen=True)
class PreparedImage:
    tensor: np.ndarray
    # The decoded original image (uint8 HxWxC) to draw overlays on; for raw tensors a rendering of the tensor.
    picture: np.ndarray
    geometry: Geometry | None


def prepare_images(model: LoadedModel, images: list[ImageInput], limits: Limits) -> list[PreparedImage]:
    if not images:
        raise InvalidInput("the request has no images")
    if len(images) > limits.max_images_per_request:
        raise InvalidInput(f"the request has {len(images)} images; the limit is {limits.max_images_per_request}")
    return [_prepare(model, image, index, limits) for index, image in enumerate(images)]


def _prepare(model: LoadedModel, image: ImageInput, index: int, limits: Limits) -> PreparedImage:
    try:
        if image.encoded is not None:
            return _from_encoded(model, image.encoded, limits)
        if image.tensor is not None:
            return _from_tensor(model, image.tensor, limits)
        raise InvalidInput("the image has neither encoded bytes nor a tensor")
    except InvalidInput as error:
        raise InvalidInput(f"image {index}: {error}") from error


def _from_encoded(model: LoadedModel, data: bytes, limits: Limits) -> PreparedImage:
    spec = model.preprocessing
    if spec is None:
        raise InvalidInput(
            f"model {model.name!r} has no preprocessing config, so it takes raw tensors only: send a float32 tensor "
            f"shaped {_describe(model.signature.sample_shape)}, or add a preprocessing section to its config.yaml"
        )
    picture = decode_image(data, spec.color, limits.max_image_pixels)
    tensor, geometry = preprocess(picture, spec)
    return PreparedImage(tensor=tensor, picture=picture, geometry=geometry)


def _from_tensor(model: LoadedModel, tensor: np.ndarray, limits: Limits) -> PreparedImage:
    expected = model.signature.sample_shape
    if tensor.dtype != np.float32:
        raise InvalidInput(f"tensor dtype must be float32, got {tensor.dtype}")
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
    if not np.isfinite(tensor).all():
        raise InvalidInput("tensor contains NaN or infinite values")
    return PreparedImage(tensor=tensor, picture=tensor_to_image(tensor, model.signature.layout), geometry=None)


def _describe(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
