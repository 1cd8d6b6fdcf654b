"""Faithfulness correlation equals a loop written from Bhatt et al.'s definition (Quantus FaithfulnessCorrelation,
scipy's Pearson) with the same random subsets, and is exactly 1 for the exact attribution of a linear model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation.faithfulness import faithfulness_correlation

IMAGE_SHAPE = (3, 8, 7)
TARGETS = [1, 2, 4]


def reference(image, maps, layout, score, runs, subset_size, fill, seed) -> np.ndarray:
    """Quantus' evaluate_instance per target, pixels of every channel at once."""
    rng = np.random.default_rng(seed)
    height, width = maps.shape[1:]
    clean = score(image[None])[0]
    drops, sums = [], []
    for _ in range(runs):
        subset = rng.choice(height * width, subset_size, replace=False)
        perturbed = image.copy()
        for pixel in subset:
            y, x = divmod(pixel, width)
            if layout == "NCHW":
                perturbed[:, y, x] = fill
            else:
                perturbed[y, x, :] = fill
        drops.append(clean - score(perturbed[None])[0])
        sums.append([maps[t].reshape(-1)[subset].sum() for t in range(len(maps))])
    drops, sums = np.array(drops), np.array(sums)
    return np.array([pearsonr(sums[:, t], drops[:, t]).statistic for t in range(len(maps))])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("baseline", ["black", "zero", "mean"])
def test_equals_the_definition_on_a_cnn(cnn, torch_scores, layout, baseline) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=IMAGE_SHAPE).astype(np.float32)
    maps = rng.normal(size=(len(TARGETS), *IMAGE_SHAPE[1:])).astype(np.float32)
    model_input = image if layout == "NCHW" else np.ascontiguousarray(image.transpose(1, 2, 0))
    fill = {"black": image.min(), "zero": 0.0, "mean": image.mean()}[baseline]
    score = torch_scores(cnn, TARGETS, layout, batch_size=7)
    ours = faithfulness_correlation(
        model_input,
        maps,
        layout,
        score,
        runs=20,
        subset_size=12,
        baseline=baseline,
        rng=np.random.default_rng(5),
        batch_size=7,
    )
    expected = reference(model_input, maps, layout, score, 20, 12, fill, seed=5)
    # The scores are float32 and torch sums them in an order its thread count decides; a correlation of score drops
    # amplifies that rounding (7e-6 relative seen), far below any difference in the definition.
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_the_exact_attribution_of_a_linear_model_correlates_perfectly() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=IMAGE_SHAPE)
    weights = rng.normal(size=(2, *IMAGE_SHAPE))

    def linear(inputs: np.ndarray) -> np.ndarray:
        return inputs.reshape(len(inputs), -1) @ weights.reshape(2, -1).T

    # Zeroing pixel i removes sum_c w_c,i x_c,i from the score: gradient x input, channels summed, is exact.
    maps = (weights * image).sum(axis=1)
    values = faithfulness_correlation(
        image, maps, "NCHW", linear, runs=30, subset_size=5, baseline="zero", rng=rng, batch_size=8
    )
    np.testing.assert_allclose(values, [1.0, 1.0], atol=1e-6)
    reversed_values = faithfulness_correlation(
        image, -maps, "NCHW", linear, runs=30, subset_size=5, baseline="zero", rng=rng, batch_size=8
    )
    np.testing.assert_allclose(reversed_values, [-1.0, -1.0], atol=1e-6)


def test_a_constant_map_or_a_blind_model_gives_nan() -> None:
    image = np.random.default_rng(2).normal(size=(1, 6, 6))
    maps = np.stack([np.full((6, 6), 0.3), np.random.default_rng(3).normal(size=(6, 6))])
    blind = faithfulness_correlation(
        image,
        maps,
        "NCHW",
        lambda inputs: np.zeros((len(inputs), 2)),
        runs=10,
        subset_size=4,
        baseline="black",
        rng=np.random.default_rng(4),
        batch_size=4,
    )
    assert np.isnan(blind).all()

    def brightness(inputs: np.ndarray) -> np.ndarray:
        return np.repeat(inputs.reshape(len(inputs), -1).sum(axis=1, keepdims=True), 2, axis=1)

    values = faithfulness_correlation(
        image,
        maps,
        "NCHW",
        brightness,
        runs=10,
        subset_size=4,
        baseline="black",
        rng=np.random.default_rng(4),
        batch_size=4,
    )
    assert np.isnan(values[0]) and np.isfinite(values[1])


@pytest.mark.parametrize(
    ("runs", "subset_size", "baseline"), [(1, 4, "zero"), (10, 37, "zero"), (10, 0, "zero"), (10, 4, "white")]
)
def test_bad_parameters_are_refused(runs, subset_size, baseline) -> None:
    with pytest.raises(InvalidInput):
        faithfulness_correlation(
            np.zeros((1, 6, 6)),
            np.zeros((1, 6, 6)),
            "NCHW",
            lambda inputs: np.zeros((len(inputs), 1)),
            runs=runs,
            subset_size=subset_size,
            baseline=baseline,
            rng=np.random.default_rng(0),
            batch_size=4,
        )


@pytest.mark.parametrize("targets", [1, 3])
def test_one_value_per_target(targets) -> None:
    rng = np.random.default_rng(6)
    values = faithfulness_correlation(
        rng.normal(size=(4, 5, 3)).astype(np.float32),
        rng.normal(size=(targets, 4, 5)),
        "NHWC",
        lambda inputs: rng.normal(size=(len(inputs), targets)),
        runs=6,
        subset_size=3,
        baseline="mean",
        rng=rng,
        batch_size=4,
    )
    assert values.shape == (targets,) and np.isfinite(values).all()
