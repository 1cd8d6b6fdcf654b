"""The pointing game equals TorchRay's hit rule (a mask pixel strictly within `tolerance` of the map's maximum) and
the attribution mass equals Arras et al.'s share of positive relevance, both written below as loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation.localisation import mass_in_region, pointing_game


def reference_pointing(saliency: np.ndarray, mask: np.ndarray, tolerance: float) -> float:
    if not mask.any():
        return math.nan
    best, point = -math.inf, None
    for y in range(saliency.shape[0]):
        for x in range(saliency.shape[1]):
            if saliency[y, x] > best:  # strictly greater: the first maximum in row-major order
                best, point = saliency[y, x], (y, x)
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if mask[y, x] and (y - point[0]) ** 2 + (x - point[1]) ** 2 < tolerance**2:
                return 1.0
    return 0.0


def reference_mass(saliency: np.ndarray, mask: np.ndarray) -> float:
    inside = total = 0.0
    for y in range(saliency.shape[0]):
        for x in range(saliency.shape[1]):
            if saliency[y, x] > 0:
                total += saliency[y, x]
                inside += saliency[y, x] if mask[y, x] else 0.0
    return inside / total if total > 0 else math.nan


@pytest.mark.parametrize("tolerance", [0, 1, 2.5, 4])
@pytest.mark.parametrize("seed", range(4))
def test_pointing_equals_the_loop(seed, tolerance) -> None:
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(6, 9, 11))
    mask = np.zeros((9, 11), dtype=bool)
    mask[rng.integers(0, 9) :, : rng.integers(1, 11)] = rng.random() < 0.8
    ours = pointing_game(maps, mask, tolerance=tolerance)
    np.testing.assert_array_equal(ours, [reference_pointing(m, mask, tolerance) for m in maps])


@pytest.mark.parametrize("seed", range(4))
def test_mass_equals_the_loop(seed) -> None:
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(5, 7, 6))
    maps[0] = -np.abs(maps[0])  # no positive attribution: nan
    mask = rng.random((7, 6)) < 0.4
    ours = mass_in_region(maps, mask)
    np.testing.assert_allclose(ours, [reference_mass(m, mask) for m in maps], rtol=1e-12)
    assert np.isnan(ours[0]) and np.isfinite(ours[1:]).all()


def test_the_hit_distance_is_strict() -> None:
    maps = np.zeros((1, 10, 10))
    maps[0, 2, 3] = 1.0
    mask = np.zeros((10, 10), dtype=bool)
    mask[2, 3 + 4] = True  # exactly 4 pixels right of the maximum
    assert pointing_game(maps, mask, tolerance=4)[0] == 0.0
    assert pointing_game(maps, mask, tolerance=4.01)[0] == 1.0
    mask[2, 3] = True  # the maximum itself inside the mask, still missed with tolerance 0
    assert pointing_game(maps, mask, tolerance=0)[0] == 0.0
    assert pointing_game(maps, mask, tolerance=1)[0] == 1.0


def test_ties_point_at_the_first_maximum() -> None:
    maps = np.zeros((1, 5, 5))
    maps[0, 1, 4] = maps[0, 3, 0] = 2.0
    first, second = np.zeros((5, 5), dtype=bool), np.zeros((5, 5), dtype=bool)
    first[1, 4], second[3, 0] = True, True
    assert pointing_game(maps, first, tolerance=1)[0] == 1.0
    assert pointing_game(maps, second, tolerance=1)[0] == 0.0


def test_an_empty_mask_gives_nan() -> None:
    maps = np.random.default_rng(0).normal(size=(2, 4, 4))
    empty = np.zeros((4, 4), dtype=bool)
    assert np.isnan(pointing_game(maps, empty, tolerance=15)).all()
    np.testing.assert_array_equal(mass_in_region(np.abs(maps), empty), [0.0, 0.0])


def test_a_mask_of_another_size_is_refused() -> None:
    with pytest.raises(InvalidInput):
        pointing_game(np.zeros((1, 4, 4)), np.ones((4, 5), dtype=bool), tolerance=1)
    with pytest.raises(InvalidInput):
        mass_in_region(np.zeros((1, 4, 4)), np.ones((5, 4), dtype=bool))
    with pytest.raises(InvalidInput):
        pointing_game(np.zeros((1, 4, 4)), np.ones((4, 4), dtype=bool), tolerance=-1)


@pytest.mark.parametrize("targets", [1, 3])
def test_one_value_per_target(targets) -> None:
    maps = np.random.default_rng(1).normal(size=(targets, 6, 5))
    mask = np.zeros((6, 5), dtype=bool)
    mask[2:4, 1:3] = True
    assert pointing_game(maps, mask, tolerance=2).shape == (targets,)
    assert mass_in_region(maps, mask).shape == (targets,)
