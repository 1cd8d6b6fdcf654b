"""render_overlay and tensor_to_image: valid PNGs of the right size and colours, parameter checks."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from onnxplain.server.errors import InvalidInput
from onnxplain.server.imaging.render import COLORMAPS, normalise, render_overlay, segment_borders, tensor_to_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_rgb(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_overlay_is_a_png_of_the_image_size() -> None:
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    attribution = np.random.default_rng(1).normal(size=(37, 53)).astype(np.float32)
    assert decode_rgb(render_overlay(image, attribution)).shape == (37, 53, 3)


def test_attribution_is_resized_to_the_image() -> None:
    image = np.zeros((120, 90, 3), dtype=np.uint8)
    assert decode_rgb(render_overlay(image, np.ones((7, 5), np.float64))).shape == (120, 90, 3)


def test_gray_images_are_accepted() -> None:
    for image in (np.full((10, 12, 1), 100, np.uint8), np.full((10, 12), 100, np.uint8)):
        out = decode_rgb(render_overlay(image, np.zeros((10, 12), np.float32), alpha=0.0))
        assert out.shape == (10, 12, 3) and np.all(out == 100)


def test_alpha_zero_returns_the_image_in_rgb_order() -> None:
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[...] = (200, 100, 10)
    out = decode_rgb(render_overlay(image, np.ones((4, 6), np.float32), alpha=0.0))
    assert tuple(out[0, 0]) == (200, 100, 10)


def test_alpha_one_shows_the_colormap() -> None:
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    attribution = np.zeros((4, 6), np.float32)
    attribution[:, 3:] = -5.0  # the magnitude counts, not the sign
    out = decode_rgb(render_overlay(image, attribution, colormap="jet", alpha=1.0, clip_percentile=100))
    # Jet goes from dark blue (0) to dark red (1).
    low, high = out[0, 0], out[0, 5]
    assert low[2] > 100 and low[0] < 50
    assert high[0] > 100 and high[2] < 50


def test_all_zero_map_gives_no_warning_or_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = normalise(np.zeros((5, 5), np.float32), 99.5)
        png = render_overlay(np.zeros((5, 5, 3), np.uint8), np.zeros((5, 5), np.float32))
    assert np.all(scaled == 0)
    assert decode_rgb(png).shape == (5, 5, 3)


def test_non_finite_attribution_values_are_ignored() -> None:
    attribution = np.array([[np.nan, np.inf], [-np.inf, 1.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = render_overlay(np.zeros((2, 2, 3), np.uint8), attribution)
    assert decode_rgb(png).shape == (2, 2, 3)


def test_normalise_clips_at_the_percentile() -> None:
    values = np.arange(100, dtype=np.float32).reshape(10, 10)
    values[9, 9] = 1e6  # one outlier
    scaled = normalise(values, 98.0)
    assert scaled.max() == 1.0 and scaled.min() == 0.0
    assert scaled[5, 0] > 0.4  # not squashed to ~0 by the outlier
    sparse = np.zeros((10, 10), np.float32)
    sparse[0, 0] = 3.0  # the percentile is 0 here; fall back to the maximum
    assert normalise(sparse, 50.0)[0, 0] == 1.0


@pytest.mark.parametrize("name", ["jet", "inferno", "viridis", "magma", "plasma", "hot", "turbo", "bone", "JET"])
def test_named_colormaps(name: str) -> None:
    png = render_overlay(np.zeros((3, 3, 3), np.uint8), np.eye(3, dtype=np.float32), colormap=name)
    assert decode_rgb(png).shape == (3, 3, 3)


def test_unknown_colormap_lists_the_valid_names() -> None:
    with pytest.raises(InvalidInput, match=r"unknown colormap 'rainbowz'.*inferno.*jet.*viridis"):
        render_overlay(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3)), colormap="rainbowz")
    assert {"jet", "inferno", "viridis", "magma", "plasma", "hot", "turbo", "bone"} <= set(COLORMAPS)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_bad_alpha(alpha: float) -> None:
    with pytest.raises(InvalidInput, match="alpha"):
        render_overlay(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3)), alpha=alpha)


@pytest.mark.parametrize("percentile", [0.0, -1.0, 100.5, float("nan")])
def test_bad_clip_percentile(percentile: float) -> None:
    with pytest.raises(InvalidInput, match="clip_percentile"):
        render_overlay(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3)), clip_percentile=percentile)


def test_tensor_to_image_nchw_rgb() -> None:
    tensor = np.zeros((3, 4, 5), dtype=np.float32)
    tensor[0] = 2.0  # channel 0 at the maximum, the others at the minimum
    image = tensor_to_image(tensor, "NCHW")
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == (255, 0, 0)


def test_tensor_to_image_nhwc_and_batch_dimension() -> None:
    tensor = np.linspace(-1.0, 1.0, 2 * 3 * 3, dtype=np.float32).reshape(1, 2, 3, 3)
    image = tensor_to_image(tensor, "NHWC")
    assert image.shape == (2, 3, 3)
    assert image.min() == 0 and image.max() == 255


def test_tensor_to_image_gray_other_channel_counts_and_constant() -> None:
    assert tensor_to_image(np.random.rand(1, 6, 7), "NCHW").shape == (6, 7, 1)
    four = np.random.rand(4, 6, 7).astype(np.float32)
    image = tensor_to_image(four, "NCHW")
    assert image.shape == (6, 7, 1)
    assert np.all(tensor_to_image(np.full((3, 2, 2), 0.5), "NCHW") == 0)


def test_tensor_to_image_feeds_render_overlay() -> None:
    image = tensor_to_image(np.random.rand(3, 16, 16).astype(np.float32), "NCHW")
    assert decode_rgb(render_overlay(image, np.random.rand(16, 16))).shape == (16, 16, 3)


def test_tensor_to_image_rejects_bad_shapes() -> None:
    with pytest.raises(InvalidInput):
        tensor_to_image(np.zeros((2, 3, 4, 5)), "NCHW")
    with pytest.raises(InvalidInput):
        tensor_to_image(np.zeros((3, 0, 4)), "NCHW")
    with pytest.raises(ValueError, match="layout"):
        tensor_to_image(np.zeros((3, 4, 4)), "CHW")


def signed_map() -> np.ndarray:
    """Left half +1, right half -1, a zero band in the middle."""
    attribution = np.zeros((20, 30), np.float32)
    attribution[:, :12] = 1.0
    attribution[:, 18:] = -1.0
    return attribution


def test_both_polarities_draw_positive_green_and_negative_red_over_the_image() -> None:
    gray = np.full((20, 30, 3), 128, np.uint8)
    out = decode_rgb(render_overlay(gray, signed_map(), alpha=1.0, clip_percentile=100, polarity="both")).astype(int)
    left, middle, right = out[10, 5], out[10, 15], out[10, 25]
    assert left[1] > 150 and left[0] < 50 and left[2] < 50  # green
    assert right[0] > 150 and right[1] < 50 and right[2] < 50  # red
    np.testing.assert_array_equal(middle, [128, 128, 128])  # no evidence: the picture itself


@pytest.mark.parametrize(("polarity", "hot_column", "cold_column"), [("positive", 5, 25), ("negative", 25, 5)])
def test_one_sided_polarities_show_only_their_sign(polarity: str, hot_column: int, cold_column: int) -> None:
    black = np.zeros((20, 30, 3), np.uint8)
    out = decode_rgb(render_overlay(black, signed_map(), alpha=1.0, clip_percentile=100, polarity=polarity))
    jet = {
        name: cv2.applyColorMap(np.array([[level]], np.uint8), COLORMAPS["jet"])[0, 0, ::-1]
        for name, level in (("hot", 255), ("cold", 0))
    }
    np.testing.assert_array_equal(out[10, hot_column], jet["hot"])
    np.testing.assert_array_equal(out[10, cold_column], jet["cold"])


def test_unknown_polarity_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="polarity"):
        render_overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), polarity="sideways")


def test_segment_borders_mark_where_the_segment_changes() -> None:
    segments = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    expected = np.array([[False, True, False], [True, True, True], [False, False, False]])
    np.testing.assert_array_equal(segment_borders(segments), expected)


def test_outline_is_drawn_in_white_on_top() -> None:
    outline = np.zeros((6, 8), bool)
    outline[:, 3] = True
    out = decode_rgb(render_overlay(np.zeros((6, 8, 3), np.uint8), np.zeros((6, 8), np.float32), outline=outline))
    assert (out[:, 3] == 255).all()
    assert (out[:, 5] < 255).all()
