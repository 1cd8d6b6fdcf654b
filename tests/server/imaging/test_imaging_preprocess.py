"""preprocess and map_to_original: torchvision's resize/crop rounding, normalisation, layouts, and the way back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxplain.server.errors import InvalidInput
from onnxplain.server.imaging.geometry import Geometry, map_to_original
from onnxplain.server.imaging.preprocess import preprocess, target_size
from onnxplain.server.imaging.spec import PreprocessingSpec


def spec_for_model(**fields) -> PreprocessingSpec:
    """A spec as the loader hands it over: the layout filled in (NCHW unless a test names another)."""
    return PreprocessingSpec(**{"layout": "NCHW", **fields})


IMAGENET = spec_for_model(resize=(256,), center_crop=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def ramp(height: int, width: int, channels: int = 3) -> np.ndarray:
    values = np.arange(height * width * channels, dtype=np.int64) % 251
    return values.reshape(height, width, channels).astype(np.uint8)


def test_landscape_resize_shorter_side_and_center_crop() -> None:
    # 375x500: the height is the shorter side -> 256 x int(256 * 500 / 375) = 256 x int(341.33) = 256 x 341.
    # Crop 224: top = round(32 / 2) = 16, left = round(117 / 2) = round(58.5) = 58 (half to even, as torchvision).
    tensor, geometry = preprocess(ramp(375, 500), IMAGENET)
    assert geometry == Geometry(375, 500, 256, 341, 16, 58, 224, 224)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == np.float32 and tensor.flags.c_contiguous


def test_portrait_resize_shorter_side_and_center_crop() -> None:
    # 500x333: the width is shorter -> int(256 * 500 / 333) = int(384.38) = 384 x 256; top = 80, left = 16.
    _, geometry = preprocess(ramp(500, 333), IMAGENET)
    assert geometry == Geometry(500, 333, 384, 256, 80, 16, 224, 224)


def test_square_and_already_sized_images() -> None:
    _, geometry = preprocess(ramp(256, 256), IMAGENET)
    assert geometry == Geometry(256, 256, 256, 256, 16, 16, 224, 224)
    _, geometry = preprocess(ramp(100, 100), IMAGENET)  # upscaled, then cropped
    assert geometry == Geometry(100, 100, 256, 256, 16, 16, 224, 224)


def test_crop_offset_ties_round_half_to_even() -> None:
    spec = spec_for_model(center_crop=(224, 224))
    # (257 - 224) / 2 = 16.5 -> 16; (259 - 224) / 2 = 17.5 -> 18.
    _, geometry = preprocess(ramp(257, 259), spec)
    assert (geometry.crop_top, geometry.crop_left) == (16, 18)


def test_crop_takes_the_center_pixels_unchanged() -> None:
    image = ramp(10, 12)
    spec = spec_for_model(center_crop=(4, 6), scale=1.0, layout="NHWC")
    tensor, geometry = preprocess(image, spec)
    assert (geometry.crop_top, geometry.crop_left) == (3, 3)
    np.testing.assert_array_equal(tensor, image[3:7, 3:9].astype(np.float32))


def test_exact_resize() -> None:
    tensor, geometry = preprocess(ramp(50, 80), spec_for_model(resize=(32, 48), interpolation="area"))
    assert tensor.shape == (3, 32, 48)
    assert geometry == Geometry(50, 80, 32, 48, 0, 0, 32, 48)


@pytest.mark.parametrize("interpolation", ["linear", "nearest", "cubic", "area"])
def test_interpolations_and_gray(interpolation: str) -> None:
    spec = spec_for_model(resize=(20,), color="gray", interpolation=interpolation)  # type: ignore[arg-type]
    tensor, geometry = preprocess(ramp(40, 60, 1), spec)
    assert tensor.shape == (1, 20, 30) and (geometry.resized_height, geometry.resized_width) == (20, 30)


def test_mean_std_normalisation() -> None:
    image = np.empty((4, 4, 3), dtype=np.uint8)
    image[...] = (255, 0, 51)
    spec = spec_for_model(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    tensor, _ = preprocess(image, spec)
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    for channel, value in enumerate(expected):
        np.testing.assert_allclose(tensor[channel], value, rtol=1e-5)


def test_single_mean_and_std_broadcast() -> None:
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    tensor, _ = preprocess(image, spec_for_model(scale=1.0, mean=(50.0,), std=(25.0,)))
    np.testing.assert_allclose(tensor, 2.0)


def test_nchw_and_nhwc_hold_the_same_values() -> None:
    image = ramp(30, 40)
    nchw, _ = preprocess(image, spec_for_model(layout="NCHW"))
    nhwc, _ = preprocess(image, spec_for_model(layout="NHWC"))
    assert nchw.shape == (3, 30, 40) and nhwc.shape == (30, 40, 3)
    assert nchw.flags.c_contiguous and nhwc.flags.c_contiguous
    np.testing.assert_array_equal(nchw, nhwc.transpose(2, 0, 1))
    np.testing.assert_allclose(nhwc, image / np.float32(255.0), rtol=1e-6)


def test_crop_larger_than_the_image_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="smaller than the 224x224 center crop"):
        preprocess(ramp(100, 300), spec_for_model(center_crop=(224, 224)))


@pytest.mark.parametrize(
    "spec",
    [
        spec_for_model(mean=(0.1, 0.2)),
        spec_for_model(std=(1.0, 1.0)),
        spec_for_model(std=(0.0,)),
        spec_for_model(resize=(1, 2, 3)),
        spec_for_model(resize=(0,)),
        spec_for_model(center_crop=(1, 2, 3)),
    ],
)
def test_bad_specs_are_configuration_errors(spec: PreprocessingSpec) -> None:
    with pytest.raises(ValueError):
        preprocess(ramp(8, 8), spec)


def test_channel_mismatch_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="expected an"):
        preprocess(ramp(8, 8, 1), spec_for_model(color="rgb"))


def test_target_size() -> None:
    assert target_size(IMAGENET) == (224, 224)
    assert target_size(spec_for_model(resize=(32, 48))) == (32, 48)
    assert target_size(spec_for_model(resize=(32, 48), center_crop=(30, 40))) == (30, 40)
    assert target_size(spec_for_model(resize=(256,))) is None
    assert target_size(spec_for_model()) is None


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 300), width=st.integers(1, 300))
def test_fixed_specs_always_produce_target_size(height: int, width: int) -> None:
    spec = spec_for_model(resize=(64,), center_crop=(56, 60))
    tensor, geometry = preprocess(ramp(height, width), spec)
    assert tensor.shape == (3, 56, 60) and target_size(spec) == (56, 60)
    assert min(geometry.resized_height, geometry.resized_width) == 64


def test_map_to_original_places_the_crop_box() -> None:
    # Original 100x150 resized x2 to 200x300; the crop box rows 20..180, columns 40..260 is rows 10..90,
    # columns 20..130 of the original.
    geometry = Geometry(100, 150, 200, 300, 20, 40, 160, 220)
    mapped = map_to_original(np.ones((160, 220), dtype=np.float32), geometry)
    assert mapped.shape == (100, 150) and mapped.dtype == np.float32
    np.testing.assert_allclose(mapped[12:88, 22:128], 1.0)
    assert np.all(mapped[:8] == 0) and np.all(mapped[92:] == 0)
    assert np.all(mapped[:, :18] == 0) and np.all(mapped[:, 132:] == 0)


def test_map_to_original_follows_the_content() -> None:
    # A hot spot at the model input's center lands at the original image's center.
    _, geometry = preprocess(ramp(375, 500), IMAGENET)
    attribution = np.zeros((224, 224), dtype=np.float32)
    attribution[100:124, 100:124] = 1.0
    mapped = map_to_original(attribution, geometry)
    assert mapped.shape == (375, 500)
    rows, cols = np.indices(mapped.shape)
    row, col = (rows * mapped).sum() / mapped.sum(), (cols * mapped).sum() / mapped.sum()
    assert abs(row - 375 / 2) < 3 and abs(col - 500 / 2) < 3


def test_map_to_original_identity_and_shape_check() -> None:
    geometry = Geometry.identity(5, 7)
    attribution = np.arange(35, dtype=np.float32).reshape(5, 7)
    np.testing.assert_array_equal(map_to_original(attribution, geometry), attribution)
    with pytest.raises(ValueError, match="does not match the crop size"):
        map_to_original(np.zeros((7, 5), np.float32), geometry)
