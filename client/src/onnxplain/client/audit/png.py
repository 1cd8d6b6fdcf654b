"""Pictures of the client's own maps (per-class means) as PNG, with zlib alone: the client has no imaging library."""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SEQUENTIAL = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=float)
"""Inferno's anchors: dark to bright, for maps with no negative values."""
_DIVERGING = np.array([(59, 76, 192), (221, 221, 221), (180, 4, 38)], dtype=float)
"""Coolwarm's anchors: blue negative, grey zero, red positive."""


def map_to_png(values: np.ndarray) -> bytes:
    return encode_png(colorize(values))


def colorize(values: np.ndarray) -> np.ndarray:
    """(H, W) map → (H, W, 3) uint8, scaled by the largest |value|; a diverging colormap as soon as any value is < 0."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    scale = float(np.abs(values).max()) or 1.0
    if values.min() < 0:
        return _apply(_DIVERGING, (values / scale + 1) / 2)
    return _apply(_SEQUENTIAL, values / scale)


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 → an 8-bit RGB PNG (no filtering: these pictures are small)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {rgb.dtype}{rgb.shape}")
    height, width = rgb.shape[:2]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + _chunk(b"IEND", b"")
    )


def _apply(anchors: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    positions = np.linspace(0.0, 1.0, len(anchors))
    channels = [np.interp(np.clip(fraction, 0, 1), positions, anchors[:, channel]) for channel in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
