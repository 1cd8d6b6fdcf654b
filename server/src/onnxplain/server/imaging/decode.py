"""Encoded image bytes to a uint8 array in the colour order a model expects, refusing oversized images first."""

from __future__ import annotations

import cv2
import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.imaging.header import jpeg_scan_count, probe_size
from onnxplain.server.imaging.spec import ColorOrder

# Encoders write 1 scan (baseline) to about 10 (libjpeg's progressive script); decoding time grows with each one.
MAX_JPEG_SCANS = 100


def decode_image(data: bytes, color: ColorOrder, max_pixels: int) -> np.ndarray:
    """Decode a PNG, JPEG, BMP or WebP image to a C-contiguous uint8 array of shape (H, W, C).

    C is 3 (RGB or BGR order, as `color` says) or 1 for "gray". The size is checked against `max_pixels` from the
    header, and a JPEG's scan count against MAX_JPEG_SCANS, before any pixel is decoded. EXIF orientation is applied
    (OpenCV's default), 16-bit images are scaled to 8 bits and an alpha channel is dropped. Every bad image raises
    InvalidInput.
    """
    if color not in ("rgb", "bgr", "gray"):
        raise ValueError(f"unknown colour order {color!r}; expected 'rgb', 'bgr' or 'gray'")
    check_pixels(*probe_size(data), max_pixels)
    if data.startswith(b"\xff\xd8") and (scans := jpeg_scan_count(data)) > MAX_JPEG_SCANS:
        raise InvalidInput(f"the JPEG has {scans} scans, above the limit of {MAX_JPEG_SCANS}")

    flags = cv2.IMREAD_GRAYSCALE if color == "gray" else cv2.IMREAD_COLOR
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise InvalidInput(f"could not decode the image: {_readable(exc)}") from None
    if image is None or image.size == 0:
        raise InvalidInput("could not decode the image: the data is corrupt, truncated or unsupported")
    # EXIF orientation may swap the sides; the pixel count cannot grow. Guard against a lying header anyway.
    check_pixels(image.shape[0], image.shape[1], max_pixels)
    # Without IMREAD_ANYDEPTH OpenCV already returns 8 bits; never hand on another depth regardless.
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InvalidInput(f"could not decode the image: unsupported sample type {image.dtype}")

    if color == "gray":
        if image.ndim == 3:
            image = image[:, :, 0]
        image = image[:, :, np.newaxis]
    else:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = image[:, :, :3]
        if color == "rgb":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise InvalidInput(f"image is {height}x{width} = {height * width} pixels, above the limit of {max_pixels}")


def _readable(exc: cv2.error) -> str:
    """OpenCV error texts span lines and name its source files; keep the part a client can read."""
    detail = getattr(exc, "err", None)
    if isinstance(detail, str) and detail.strip():
        return detail.strip()
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else "unknown OpenCV error"
