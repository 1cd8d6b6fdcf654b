"""A decoded image to one model input tensor, as the model's PreprocessingSpec declares (torchvision's rounding)."""

from __future__ import annotations

import cv2
import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.imaging.geometry import Geometry
from onnxplain.server.imaging.spec import PreprocessingSpec

_INTERPOLATION = {
    "linear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


def target_size(spec: PreprocessingSpec) -> tuple[int, int] | None:
    """The (height, width) every input has after `spec`, or None when it depends on the image."""
    if spec.center_crop:
        return _crop_size(spec)
    if len(spec.resize) == 2:
        return spec.resize[0], spec.resize[1]
    return None


def preprocess(image: np.ndarray, spec: PreprocessingSpec) -> tuple[np.ndarray, Geometry]:
    """Resize, center crop, scale and normalise `image`, then lay it out; return the float32 tensor and Geometry.

    `image` is (H, W, C) uint8 as decode_image returns it, already in `spec.color` order. The tensor has no batch
    dimension: (C, H, W) for "NCHW", (H, W, C) for "NHWC". A crop larger than the (resized) image raises
    InvalidInput; a spec that cannot work for any image raises ValueError (a configuration error).
    """
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if image.ndim != 3 or image.shape[2] != spec.channels:
        raise ValueError(f"expected an (H, W, {spec.channels}) image for colour {spec.color!r}, got {image.shape}")
    if spec.interpolation not in _INTERPOLATION:
        raise ValueError(f"unknown interpolation {spec.interpolation!r}; expected one of {sorted(_INTERPOLATION)}")
    if spec.layout not in ("NCHW", "NHWC"):
        raise ValueError(f"unknown layout {spec.layout!r}; expected 'NCHW' or 'NHWC'")
    if spec.scale is None:
        raise ValueError("scale is unset; the loader sets it from the model's input type")
    channels = image.shape[2]
    mean = _per_channel(spec.mean, channels, "mean")
    std = _per_channel(spec.std, channels, "std")
    if np.any(std == 0):
        raise ValueError(f"std must not contain zero: {spec.std}")

    original_height, original_width = image.shape[:2]
    resized_height, resized_width = _resized_size(original_height, original_width, spec.resize)
    if (resized_height, resized_width) != (original_height, original_width):
        image = cv2.resize(image, (resized_width, resized_height), interpolation=_INTERPOLATION[spec.interpolation])
        if image.ndim == 2:  # cv2.resize drops a single channel axis.
            image = image[:, :, np.newaxis]

    if spec.center_crop:
        crop_height, crop_width = _crop_size(spec)
        if crop_height > resized_height or crop_width > resized_width:
            raise InvalidInput(
                f"image is {resized_height}x{resized_width} after resizing, "
                f"smaller than the {crop_height}x{crop_width} center crop"
            )
        top = round((resized_height - crop_height) / 2.0)  # round half to even, as torchvision
        left = round((resized_width - crop_width) / 2.0)
        image = image[top : top + crop_height, left : left + crop_width]
    else:
        crop_height, crop_width, top, left = resized_height, resized_width, 0, 0

    tensor = image.astype(np.float32) * np.float32(spec.scale)
    tensor = (tensor - mean) / std
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    geometry = Geometry(
        original_height, original_width, resized_height, resized_width, top, left, crop_height, crop_width
    )
    return np.ascontiguousarray(tensor, dtype=np.float32), geometry


def _resized_size(height: int, width: int, resize: tuple[int, ...]) -> tuple[int, int]:
    """torchvision.transforms.Resize: (s,) sets the shorter side to s and the longer to int(s * long / short)."""
    if any(int(s) != s or s <= 0 for s in resize):
        raise ValueError(f"resize sizes must be positive integers, got {resize}")
    if not resize:
        return height, width
    if len(resize) == 1:
        size = int(resize[0])
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size, int(size * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    if len(resize) == 2:
        return int(resize[0]), int(resize[1])
    raise ValueError(f"resize must be (), (size,) or (height, width), got {resize}")


def _crop_size(spec: PreprocessingSpec) -> tuple[int, int]:
    crop = spec.center_crop
    if len(crop) == 1:  # torchvision's CenterCrop(size): a square.
        crop = (crop[0], crop[0])
    if len(crop) != 2 or any(int(s) != s or s <= 0 for s in crop):
        raise ValueError(f"center_crop must be (), (size,) or (height, width) of positive integers, got {crop}")
    return int(crop[0]), int(crop[1])


def _per_channel(values: tuple[float, ...], channels: int, name: str) -> np.ndarray:
    if len(values) not in (1, channels):
        raise ValueError(f"{name} must have 1 or {channels} values, got {len(values)}")
    return np.asarray(values, dtype=np.float32)
