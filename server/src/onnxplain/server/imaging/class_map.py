"""A picture of a per-pixel class map (CLEAR's dominant class and response): as the CLEAR paper draws it, hue from
the class and brightness from the response (black where nothing responds), blended over the image, with a legend of
the classes that respond and their share of the responding pixels."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from onnxplain.server.imaging.render import normalise, to_bgr

_LEGEND_ROW = 18
_LEGEND_WIDTH = 170
# Pixels below this fraction of the (clipped) top response count as not responding in the legend's shares.
_RESPONDING = 0.1


def class_colors(count: int) -> np.ndarray:
    """(count, 3) distinct BGR uint8 colours: hues evenly spaced, alternating two brightnesses for neighbours."""
    hues = (np.arange(count) * 180.0 / max(count, 1)).astype(np.uint8)
    values = np.where(np.arange(count) % 2 == 0, 255, 190).astype(np.uint8)
    hsv = np.stack([hues, np.full(count, 220, np.uint8), values], axis=1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]


def render_class_map(
    picture: np.ndarray,
    classes: np.ndarray,
    response: np.ndarray,
    labels: Sequence[str],
    to_picture: Callable[[np.ndarray], np.ndarray],
    clip_percentile: float = 99.5,
    alpha: float = 0.6,
) -> bytes:
    """PNG of the class map over the picture (RGB or gray uint8). `classes` and `response` are (h, w) at model-input
    resolution; `to_picture` maps an (h, w) float map onto the picture's geometry (undoing resize and crop). The
    picture shows through at 0.5 * (1 - alpha) of its brightness."""
    picture_bgr = to_bgr(picture)
    count = max(len(labels), int(classes.max()) + 1)
    palette = class_colors(count).astype(np.float32)
    strength = normalise(np.maximum(response, 0.0).astype(np.float32), clip_percentile)
    # Brightness on a square-root scale: attribution maps are heavy-tailed, and linear brightness leaves most
    # responding pixels too dark to tell their colour.
    colored = palette[classes] * np.sqrt(strength)[:, :, None]
    layer = np.stack([to_picture(colored[:, :, channel]) for channel in range(3)], axis=2)
    # The picture is dimmed under the colours so that white strokes do not wash them out.
    dimmed = 0.5 * (1.0 - alpha) * picture_bgr.astype(np.float32)
    blended = np.clip(layer + dimmed, 0, 255).round().astype(np.uint8)
    canvas = _with_legend(blended, classes[strength > _RESPONDING], palette.astype(np.uint8), labels)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:  # pragma: no cover - encoding an 8-bit BGR array to PNG does not fail
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def _with_legend(image: np.ndarray, classes: np.ndarray, palette: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The image with a white strip on the right listing the classes of `classes` (the responding pixels' dominant
    classes), most pixels first."""
    present, counts = np.unique(classes, return_counts=True)
    order = present[np.argsort(-counts)]
    shares = dict(zip(present.tolist(), (counts / classes.size).tolist(), strict=True))
    height = max(image.shape[0], _LEGEND_ROW * (len(order) + 1))
    canvas = np.full((height, image.shape[1] + _LEGEND_WIDTH, 3), 255, dtype=np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    for row, class_index in enumerate(order.tolist()):
        top = 4 + row * _LEGEND_ROW
        left = image.shape[1] + 6
        color = tuple(int(c) for c in palette[class_index])
        cv2.rectangle(canvas, (left, top), (left + 12, top + 12), color, thickness=-1)
        name = labels[class_index] if class_index < len(labels) and labels[class_index] else str(class_index)
        text = f"{name} {100 * shares[class_index]:.0f}%"
        cv2.putText(canvas, text, (left + 18, top + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
