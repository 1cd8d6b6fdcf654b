"""Infidelity equals Captum's captum.metrics.infidelity fed the same noise, for spatial and input-shaped maps, and
vanishes for the exact attribution (the gradient) of a linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.metrics import infidelity as captum_infidelity

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation.infidelity import infidelity

IMAGE_SHAPE = (3, 8, 7)
TARGETS = [0, 3]
SAMPLES, NOISE_STD = 9, 0.2


def captum_reference(model, image: np.ndarray, maps: np.ndarray, layout: str, seed: int) -> np.ndarray:
    """Captum per target on the NCHW image, its perturb_func returning the noise our call draws from the same seed
    (drawn in the model's layout): (I, x - I)."""
    shape = IMAGE_SHAPE if layout == "NCHW" else (*IMAGE_SHAPE[1:], IMAGE_SHAPE[0])
    drawn = np.random.default_rng(seed).normal(0.0, NOISE_STD, size=(SAMPLES, *shape)).astype(np.float32)
    noise = torch.from_numpy(np.ascontiguousarray(drawn if layout == "NCHW" else drawn.transpose(0, 3, 1, 2)))

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert inputs.shape == noise.shape
        return noise, inputs - noise

    inputs = torch.from_numpy(image)[None]
    values = []
    for index, target in enumerate(TARGETS):
        attribution = torch.from_numpy(np.array(maps[index], dtype=np.float32))[None]
        values.append(captum_infidelity(model, perturb, inputs, attribution, target=target, n_perturb_samples=SAMPLES))
    return torch.cat(values).numpy()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("spatial", [True, False])
def test_equals_captum(cnn, torch_scores, layout, spatial) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=IMAGE_SHAPE).astype(np.float32)
    maps = rng.normal(size=(len(TARGETS), *IMAGE_SHAPE)).astype(np.float32)
    if spatial:
        maps = maps[:, :1]  # one value per pixel, the same for every channel
    expected = captum_reference(cnn, image, np.broadcast_to(maps, (len(TARGETS), *IMAGE_SHAPE)), layout, seed=7)
    model_input = image if layout == "NCHW" else np.ascontiguousarray(image.transpose(1, 2, 0))
    ours_maps = maps[:, 0] if spatial else maps if layout == "NCHW" else maps.transpose(0, 2, 3, 1)
    ours = infidelity(
        model_input,
        np.ascontiguousarray(ours_maps),
        layout,
        torch_scores(cnn, TARGETS, layout, batch_size=4),
        samples=SAMPLES,
        noise_std=NOISE_STD,
        rng=np.random.default_rng(7),
        batch_size=4,
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)


def test_the_gradient_of_a_linear_model_has_no_infidelity() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=IMAGE_SHAPE)
    weights = rng.normal(size=(2, *IMAGE_SHAPE))

    def linear(inputs: np.ndarray) -> np.ndarray:
        return inputs.reshape(len(inputs), -1) @ weights.reshape(2, -1).T

    exact = infidelity(image, weights, "NCHW", linear, samples=20, noise_std=1.0, rng=rng, batch_size=6)
    np.testing.assert_allclose(exact, 0.0, atol=1e-20)
    halved = infidelity(image, weights / 2, "NCHW", linear, samples=20, noise_std=1.0, rng=rng, batch_size=6)
    assert (halved > 1.0).all()


def test_maps_of_another_shape_are_refused() -> None:
    with pytest.raises(InvalidInput, match="maps of shape"):
        infidelity(
            np.zeros(IMAGE_SHAPE),
            np.zeros((1, 7, 8)),
            "NCHW",
            lambda inputs: np.zeros((len(inputs), 1)),
            samples=3,
            noise_std=0.1,
            rng=np.random.default_rng(0),
            batch_size=2,
        )


@pytest.mark.parametrize("targets", [1, 3])
@pytest.mark.parametrize("input_shaped", [False, True])
def test_one_value_per_target(targets, input_shaped) -> None:
    rng = np.random.default_rng(2)
    image = rng.normal(size=(5, 4, 3)).astype(np.float32)
    maps = rng.normal(size=(targets, *image.shape) if input_shaped else (targets, 5, 4))
    values = infidelity(
        image,
        maps,
        "NHWC",
        lambda inputs: inputs.reshape(len(inputs), -1)[:, :targets],
        samples=5,
        noise_std=0.1,
        rng=rng,
        batch_size=1,
    )
    assert values.shape == (targets,) and np.isfinite(values).all()
