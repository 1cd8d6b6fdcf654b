"""Superpixels, grids, fills and the surrogate fits, without a server."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from onnxplain.server.errors import InvalidInput
from onnxplain.server.methods.base import ExplainJob
from onnxplain.server.methods.segment_perturbation import (
    MAX_FITTED_SEGMENTS,
    SegmentPlan,
    check_fitted_segments,
    segment_means,
)
from onnxplain.server.methods.superpixels import displayable, grid_segments, relabelled, slic_segments
from onnxplain.server.methods.surrogate import lime_weights, shapley_regression, weighted_ridge


def quadrants(height: int = 40, width: int = 36) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, 3) uint8 picture of four flat colours and the quadrant id of each pixel."""
    rows = (np.arange(height) >= height // 2)[:, None]
    cols = (np.arange(width) >= width // 2)[None, :]
    quadrant = (rows * 2 + cols).astype(np.int32)
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], dtype=np.uint8)
    return colours[quadrant], quadrant


def test_slic_superpixels_follow_colour_edges() -> None:
    picture, quadrant = quadrants()
    segments = slic_segments(picture, 16)
    count = segments.max() + 1
    assert 8 <= count <= 24
    for segment in range(count):
        assert len(np.unique(quadrant[segments == segment])) == 1, f"segment {segment} crosses a colour edge"


def test_slic_gives_about_n_segments_contiguously_numbered_and_reproducibly() -> None:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.random((96, 96, 3)), axis=0), axis=1)
    picture = displayable(smooth, "NHWC")
    for n_segments in (10, 50, 150):
        segments = slic_segments(picture, n_segments)
        assert segments.dtype == np.int32 and segments.shape == (96, 96)
        np.testing.assert_array_equal(np.unique(segments), np.arange(segments.max() + 1))
        assert n_segments / 2 <= segments.max() + 1 <= n_segments * 1.5
        np.testing.assert_array_equal(segments, slic_segments(picture, n_segments))


@pytest.mark.parametrize("shape", [(1, 30), (30, 1), (2, 2), (3, 50), (5, 5), (1, 1)])
@pytest.mark.parametrize("n_segments", [2, 50, 10_000])
def test_slic_on_tiny_images_returns_a_valid_map(shape, n_segments) -> None:
    # Uncapped, OpenCV's SLIC kills the process with SIGSEGV on most of these.
    picture = (np.random.default_rng(1).random((*shape, 3)) * 255).astype(np.uint8)
    segments = slic_segments(picture, n_segments)
    assert segments.shape == shape
    np.testing.assert_array_equal(np.unique(segments), np.arange(segments.max() + 1))


@pytest.mark.parametrize(
    ("height", "width", "n_segments", "grid"),
    [(20, 18, 6, (3, 2)), (20, 18, 9, (3, 3)), (10, 40, 4, (1, 4)), (2, 100, 50, (1, 50)), (3, 3, 100, (3, 3))],
)
def test_grid_cells_are_rectangles_of_near_equal_size(height, width, n_segments, grid) -> None:
    segments = grid_segments(height, width, n_segments)
    rows, cols = grid
    assert segments.max() + 1 == rows * cols
    for cell in range(rows * cols):
        ys, xs = np.nonzero(segments == cell)
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1), "not a rectangle"
        assert height // rows <= ys.max() - ys.min() + 1 <= -(-height // rows)
        assert width // cols <= xs.max() - xs.min() + 1 <= -(-width // cols)


def test_relabelling_keeps_regions_and_their_order() -> None:
    segments = np.array([[40, 40, 7], [7, 1000, 3]])
    np.testing.assert_array_equal(relabelled(segments), [[2, 2, 1], [1, 3, 0]])


def test_displayable_scales_each_channel_to_the_full_range() -> None:
    image = np.stack([np.linspace(-3, 1, 12).reshape(3, 4), np.full((3, 4), 5.0), np.arange(12.0).reshape(3, 4)])
    picture = displayable(image.astype(np.float32), "NCHW")
    assert picture.shape == (3, 4, 3) and picture.dtype == np.uint8
    assert (picture[..., 0].min(), picture[..., 0].max()) == (0, 255)
    assert (picture[..., 2].min(), picture[..., 2].max()) == (0, 255)
    assert np.all(picture[..., 1] == 0)
    np.testing.assert_array_equal(displayable(image.transpose(1, 2, 0), "NHWC"), picture)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_segment_means_fill_each_segment_with_its_own_colour(layout) -> None:
    rng = np.random.default_rng(2)
    image = rng.normal(size=(3, 6, 5)).astype(np.float32)
    segments = rng.integers(0, 4, size=(6, 5)).astype(np.int32)
    expected = np.empty_like(image)
    for segment in range(4):
        for channel in range(3):
            expected[channel][segments == segment] = image[channel][segments == segment].mean()
    fill = segment_means(image if layout == "NCHW" else image.transpose(1, 2, 0), segments, layout)
    np.testing.assert_allclose(fill if layout == "NCHW" else fill.transpose(2, 0, 1), expected, rtol=1e-6, atol=1e-6)


def test_weighted_ridge_matches_sklearn_for_every_target() -> None:
    rng = np.random.default_rng(3)
    features = rng.integers(0, 2, size=(50, 7)).astype(bool)
    targets = rng.normal(size=(50, 3))
    weights = rng.random(50)
    coefficients, intercepts = weighted_ridge(features, targets, weights, alpha=1.0)
    for index in range(3):
        ridge = Ridge(alpha=1.0).fit(features.astype(float), targets[:, index], sample_weight=weights)
        np.testing.assert_allclose(coefficients[index], ridge.coef_, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(intercepts[index], ridge.intercept_, rtol=1e-10, atol=1e-10)


def test_lime_weights_are_one_for_all_on_and_fall_with_cosine_distance() -> None:
    keep = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    distance = np.array([0.0, 1 - np.sqrt(3 / 4), 1 - np.sqrt(1 / 4), 1.0])
    np.testing.assert_allclose(lime_weights(keep, 0.25), np.exp(-(distance**2) / 0.25**2 / 2))


def test_shapley_regression_recovers_an_additive_game_and_meets_the_total() -> None:
    rng = np.random.default_rng(4)
    phi = rng.normal(size=(2, 5))
    keep = rng.integers(0, 2, size=(40, 5)).astype(bool)
    values = keep.astype(float) @ phi.T
    np.testing.assert_allclose(shapley_regression(keep, values, rng.random(40), phi.sum(axis=1)), phi, atol=1e-10)
    one = shapley_regression(np.zeros((0, 1), dtype=bool), np.zeros((0, 2)), np.zeros(0), np.array([2.0, -1.0]))
    np.testing.assert_allclose(one, [[2.0], [-1.0]])


def test_fits_refuse_more_segments_than_they_can_hold() -> None:
    check_fitted_segments(MAX_FITTED_SEGMENTS, "lime", from_client=False)
    with pytest.raises(InvalidInput, match="'n_segments' gave 1001"):
        check_fitted_segments(MAX_FITTED_SEGMENTS + 1, "lime", from_client=False)
    with pytest.raises(InvalidInput, match="the image's segments have 1001"):
        check_fitted_segments(MAX_FITTED_SEGMENTS + 1, "kernel_shap", from_client=True)


def job_for(image: np.ndarray, layout: str, targets: int = 2) -> ExplainJob:
    """Just what a plan reads: the image, its layout and the number of targets."""
    model = SimpleNamespace(signature=SimpleNamespace(layout=layout))
    scorer = SimpleNamespace(targets=np.arange(targets))
    return ExplainJob(model=model, image=image, scores=np.zeros(3), scorer=scorer, batch_size=4)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_segment_plan_keeps_the_image_where_asked_and_fills_elsewhere(layout) -> None:
    rng = np.random.default_rng(5)
    image = rng.normal(size=(2, 4, 3)).astype(np.float32)
    fill = rng.normal(size=(2, 4, 3)).astype(np.float32)
    segments = np.array([[0, 0, 1], [0, 2, 1], [2, 2, 1], [2, 2, 2]], dtype=np.int32)
    keep = np.array([[True, False, True], [False, True, False]])
    as_layout = (lambda a: a) if layout == "NCHW" else (lambda a: np.ascontiguousarray(a.transpose(1, 2, 0)))
    plan = SegmentPlan(
        job_for(as_layout(image), layout), segments, as_layout(fill), 2, lambda a, b: keep[a:b], lambda s: s
    )
    perturbed = plan.perturbed(0, 2)
    for row, kept in enumerate(keep):
        expected = fill.copy()
        for segment in np.flatnonzero(kept):
            expected[:, segments == segment] = image[:, segments == segment]
        np.testing.assert_array_equal(perturbed[row], as_layout(expected))


def test_costly_fits_refit_partial_maps_only_when_the_scored_inputs_double() -> None:
    segments = np.array([[0, 1], [2, 3]], dtype=np.int32)
    fitted_on: list[int] = []

    def solve(scores: np.ndarray) -> np.ndarray:
        fitted_on.append(len(scores))
        return np.tile(scores.sum(axis=0)[:, None], (1, 4))

    image = np.zeros((1, 2, 2), dtype=np.float32)
    keep = np.ones((64, 4), dtype=bool)
    plan = SegmentPlan(job_for(image, "NCHW"), segments, image, 64, lambda a, b: keep[a:b], solve, True)
    maps = []
    for start in range(0, 64, 4):
        plan.accumulate(start, start + 4, np.ones((4, 2)))
        maps.append(plan.result().maps)
    assert fitted_on == [4, 8, 16, 32, 64]
    # Between refits the last partial map stands; the final map uses every score.
    np.testing.assert_array_equal(maps[4], np.full((2, 2, 2), 16.0))
    np.testing.assert_array_equal(maps[-1], np.full((2, 2, 2), 64.0))
