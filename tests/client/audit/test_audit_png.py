"""The client's PNG writer, read back by an independent decoder (OpenCV), and its two colormaps."""

import cv2
import numpy as np
import pytest

from onnxplain.client.audit.png import colorize, encode_png, map_to_png


def decode(png: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    return bgr[:, :, ::-1]


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 13, 3), (28, 28, 3)])
def test_png_pixels_round_trip(shape):
    rgb = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(decode(encode_png(rgb)), rgb)


def test_only_rgb_bytes_are_encoded():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_maps_without_negative_values_go_dark_to_bright():
    values = np.linspace(0.0, 3.0, 12).reshape(3, 4)
    rgb = colorize(values).astype(int)
    brightness = rgb.sum(axis=2).ravel()
    assert np.all(np.diff(brightness) >= 0)
    assert tuple(rgb[0, 0]) == (0, 0, 4) and tuple(rgb[-1, -1]) == (252, 255, 164)


def test_signed_maps_are_blue_below_zero_grey_at_zero_red_above():
    rgb = colorize(np.array([[-2.0, 0.0, 2.0, 1.0]])).astype(int)
    assert tuple(rgb[0, 0]) == (59, 76, 192)
    assert tuple(rgb[0, 1]) == (221, 221, 221)
    assert tuple(rgb[0, 2]) == (180, 4, 38)
    assert rgb[0, 3, 0] > rgb[0, 3, 2]  # halfway to red


def test_flat_and_nan_maps_still_make_a_picture():
    assert decode(map_to_png(np.zeros((5, 6)))).shape == (5, 6, 3)
    assert decode(map_to_png(np.full((2, 2), np.nan))).shape == (2, 2, 3)
