"""The image a check explains: a synthetic picture of smooth colour blobs (so that superpixels and windows see
structure), through the model's preprocessing as an uploaded picture would go, or laid out as a raw tensor for a
model without preprocessing (pixels in [0, 1] for a float input, 0-255 for an integer one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.imaging.preprocess import preprocess, target_size
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.tools.model_file import UsageError

# Blobs per side of the synthetic picture.
BLOBS = 4


@dataclass(frozen=True)
class Probe:
    tensor: np.ndarray
    # How the tensor was made, for the report.
    description: str


def probe_image(model: LoadedModel, size: Sequence[int] | None, seed: int) -> Probe:
    """`size` (height, width) is the picture's before preprocessing, or the tensor's for a model without; it is
    needed only when neither the model nor its preprocessing fixes the input size."""
    spec = model.preprocessing
    height, width = size or (spec and target_size(spec)) or model.signature.spatial_size
    channels = spec.channels if spec else model.signature.channels
    if height is None or width is None:
        raise UsageError(f"model input {model.signature.input.name!r} has a dynamic image size: pass --size H W")
    if channels is None:
        raise UsageError(f"model input {model.signature.input.name!r} has a dynamic channel count")
    picture = _blobs(height, width, channels, np.random.default_rng(seed))
    if spec is not None:
        try:
            tensor, _ = preprocess(picture, spec)
        except InvalidInput as error:
            raise UsageError(f"{error}: pass a larger --size than {height} {width}") from None
        description = f"a {height}x{width} synthetic picture through the config's preprocessing"
    else:
        scale = 1.0 if model.signature.input.is_integer else 1.0 / 255.0
        laid_out = picture.transpose(2, 0, 1) if model.signature.layout == "NCHW" else picture
        tensor = np.ascontiguousarray(laid_out, dtype=np.float32) * np.float32(scale)
        description = f"a synthetic raw tensor, pixels scaled to [0, {255 * scale:g}]"
    _check_fits(model, tensor)
    return Probe(tensor, f"{description} ({show_shape(tensor.shape)})")


def _blobs(height: int, width: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, C) uint8: a BLOBS x BLOBS grid of random colours, bicubically upsampled."""
    grid = rng.integers(0, 256, size=(BLOBS, BLOBS, channels)).astype(np.float32)
    picture = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, channels)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def _check_fits(model: LoadedModel, tensor: np.ndarray) -> None:
    expected = model.signature.sample_shape
    if any(e is not None and e != d for e, d in zip(expected, tensor.shape, strict=True)):
        raise UsageError(
            f"the probe image is {show_shape(tensor.shape)} but model input {model.signature.input.name!r} is "
            f"{show_shape(expected)} ({model.signature.layout}): pass --size with the model's height and width"
        )


def show_shape(shape: Sequence[int | None]) -> str:
    """3x224x224; ? for a dynamic dimension."""
    return "x".join("?" if d is None else str(d) for d in shape)
