"""Pictures for people: an attribution heat map blended over the image, and a raw input tensor made viewable."""

from __future__ import annotations

import math

import cv2
import numpy as np

from onnxplain.server.errors import InvalidInput

# OpenCV's colour maps by lower-case name: jet, inferno, viridis, magma, plasma, hot, turbo, bone, ...
COLORMAPS: dict[str, int] = {
    name[len("COLORMAP_") :].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")
}


POLARITIES = ("absolute", "positive", "negative", "both")
# Diverging colours in BGR: evidence for the target green, against it red, as people draw "helped" and "cast doubt".
_FOR, _AGAINST = np.array([0, 200, 0], np.float32), np.array([0, 0, 230], np.float32)


def render_overlay(
    image: np.ndarray,
    attribution: np.ndarray,
    colormap: str = "jet",
    clip_percentile: float = 99.5,
    alpha: float = 0.5,
    polarity: str = "absolute",
    outline: np.ndarray | None = None,
) -> bytes:
    """Blend a colour-mapped attribution over `image` and return it PNG-encoded.

    `image` is (H, W, 3) RGB or (H, W, 1) / (H, W) gray uint8; `attribution` is (h, w) and is resized bilinearly
    to (H, W). `polarity` picks what is drawn: |attribution| ("absolute"), only its positive or negative part, each
    with the colormap as alpha * heat + (1 - alpha) * image; or "both" on a diverging scale, positive green and
    negative red, each pixel blended by alpha times its strength so the picture shows where nothing is. Magnitudes
    are clipped at their `clip_percentile` percentile so a few extreme pixels do not wash the map out. `outline`,
    an (H, W) boolean mask, is drawn in white on top (the segment borders LIME and KernelSHAP attributed over).
    """
    cmap = check_render_options(colormap, clip_percentile, alpha, polarity)
    bgr = to_bgr(image)
    height, width = bgr.shape[:2]
    if attribution.ndim != 2:
        raise ValueError(f"attribution must be (height, width), got shape {attribution.shape}")
    signed = np.nan_to_num(attribution.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if signed.shape != (height, width):
        signed = cv2.resize(signed, (width, height), interpolation=cv2.INTER_LINEAR)
    if polarity == "both":
        strength = normalise(np.abs(signed), clip_percentile)[:, :, None]
        colour = np.where(signed[:, :, None] >= 0, _FOR, _AGAINST)
        weight = float(alpha) * strength
        blended = (weight * colour + (1.0 - weight) * bgr.astype(np.float32)).round().astype(np.uint8)
    else:
        if polarity == "absolute":
            shown = np.abs(signed)
        else:
            shown = np.maximum(signed if polarity == "positive" else -signed, 0.0)
        levels = (normalise(shown, clip_percentile) * 255.0).round().astype(np.uint8)
        heat = cv2.applyColorMap(levels, cmap)
        blended = cv2.addWeighted(heat, float(alpha), bgr, 1.0 - float(alpha), 0.0)
    if outline is not None:
        blended[outline] = 255
    ok, encoded = cv2.imencode(".png", blended)
    if not ok:  # pragma: no cover - encoding an 8-bit BGR array to PNG does not fail
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def check_render_options(colormap: str, clip_percentile: float, alpha: float, polarity: str = "absolute") -> int:
    """The OpenCV colormap id for valid options; InvalidInput naming the bad option otherwise. Callers check
    before any work is done, so a bad option costs no passes."""
    cmap = COLORMAPS.get(colormap.lower()) if isinstance(colormap, str) else None
    if cmap is None:
        raise InvalidInput(f"unknown colormap {colormap!r}; valid names: {', '.join(sorted(COLORMAPS))}")
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise InvalidInput(f"alpha must be in [0, 1], got {alpha}")
    if polarity not in POLARITIES:
        raise InvalidInput(f"unknown polarity {polarity!r}; valid: {', '.join(POLARITIES)}")
    if not isinstance(clip_percentile, (int, float)) or not 0.0 < clip_percentile <= 100.0:
        raise InvalidInput(f"clip_percentile must be in (0, 100], got {clip_percentile}")
    return cmap


def normalise(magnitude: np.ndarray, clip_percentile: float) -> np.ndarray:
    """Scale non-negative values to 0..1, clipping at the given percentile; an all-zero map stays zero."""
    top = float(np.percentile(magnitude, clip_percentile)) if magnitude.size else 0.0
    if not math.isfinite(top) or top <= 0.0:
        top = float(magnitude.max()) if magnitude.size else 0.0  # a sparse map: fall back to the maximum
    if not math.isfinite(top) or top <= 0.0:
        return np.zeros(magnitude.shape, dtype=np.float32)
    return (np.clip(magnitude, 0.0, top) / np.float32(top)).astype(np.float32)


def tensor_to_image(tensor: np.ndarray, layout: str) -> np.ndarray:
    """A viewable uint8 (H, W, 3) or (H, W, 1) picture of a raw float input tensor, min-max scaled over the tensor.

    `tensor` is (C, H, W) for "NCHW" or (H, W, C) for "NHWC", optionally with a leading batch dimension of 1.
    Three channels are kept as they are (shown as RGB), one channel as gray; for any other count the first
    channel is shown in gray. Used when a client sent a tensor rather than an encoded image.
    """
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"unknown layout {layout!r}; expected 'NCHW' or 'NHWC'")
    array = np.asarray(tensor)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise InvalidInput(f"cannot show a tensor of shape {tuple(tensor.shape)} as an image")
    if layout == "NCHW":
        array = array.transpose(1, 2, 0)
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise InvalidInput(f"cannot show an empty tensor of shape {tuple(tensor.shape)} as an image")
    if array.shape[2] not in (1, 3):
        array = array[:, :, :1]
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(array.shape, dtype=np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    values = np.where(finite, values, low)
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.ascontiguousarray(np.clip(scaled.round(), 0, 255).astype(np.uint8))


def to_bgr(image: np.ndarray) -> np.ndarray:
    """OpenCV draws and encodes in BGR order; callers hold RGB or gray."""
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W, 1) gray, got shape {image.shape}")
    if image.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)


def segment_borders(segments: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels whose right or lower neighbour lies in another segment."""
    borders = np.zeros(segments.shape, dtype=bool)
    borders[:, :-1] |= segments[:, :-1] != segments[:, 1:]
    borders[:-1, :] |= segments[:-1, :] != segments[1:, :]
    return borders
