"""Max-sensitivity equals Captum's captum.metrics.sensitivity_max of Captum's Saliency fed the same perturbations,
and follows the definition where the map is zero (its norm counts as 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from captum.metrics import sensitivity_max

from onnxplain.server.errors import InvalidInput
from onnxplain.server.evaluation.sensitivity import max_sensitivity

IMAGE_SHAPE = (3, 8, 7)
TARGETS = [1, 4]
SAMPLES = 6


def saliency_maps(model, image: np.ndarray) -> np.ndarray:
    """(T, C, H, W) torch saliency |d f_t / d x| of one image, what our explain callable returns."""
    inputs = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].requires_grad_()
    maps = []
    for target in TARGETS:
        (gradient,) = torch.autograd.grad(model(inputs)[0, target], inputs)
        maps.append(gradient[0].abs().numpy())
    return np.stack(maps)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.parametrize("radius", [0.02, 0.3])
def test_equals_captum_on_saliency(cnn, radius) -> None:
    image = np.random.default_rng(0).normal(size=IMAGE_SHAPE).astype(np.float32)
    noise = np.random.default_rng(9).uniform(-radius, radius, size=(SAMPLES, *IMAGE_SHAPE)).astype(np.float32)
    inputs = torch.from_numpy(image)[None]

    def perturb(expanded: torch.Tensor, perturb_radius: float) -> torch.Tensor:
        assert expanded.shape == (SAMPLES, *IMAGE_SHAPE) and perturb_radius == radius
        return expanded + torch.from_numpy(noise)

    saliency = Saliency(cnn)
    expected = [
        sensitivity_max(
            saliency.attribute, inputs, perturb, perturb_radius=radius, n_perturb_samples=SAMPLES, target=target
        ).item()
        for target in TARGETS
    ]
    ours = max_sensitivity(
        image,
        saliency_maps(cnn, image),
        lambda perturbed: saliency_maps(cnn, perturbed),
        radius=radius,
        samples=SAMPLES,
        rng=np.random.default_rng(9),
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_a_zero_map_is_measured_against_a_norm_of_one() -> None:
    image = np.zeros((1, 4, 4), dtype=np.float32)
    maps = np.stack([np.zeros((4, 4)), np.full((4, 4), 2.0)])

    def explain(perturbed: np.ndarray) -> np.ndarray:
        """Both maps become the perturbation itself, so the change is ||delta|| and ||delta - 2||."""
        return np.stack([perturbed[0], perturbed[0]])

    rng = np.random.default_rng(3)
    deltas = rng.uniform(-0.5, 0.5, size=(5, 1, 4, 4)).astype(np.float32)
    expected = [
        max(np.linalg.norm(delta) for delta in deltas),
        max(np.linalg.norm(delta - 2.0) for delta in deltas) / 8.0,
    ]
    ours = max_sensitivity(image, maps, explain, radius=0.5, samples=5, rng=np.random.default_rng(3))
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_bad_parameters_are_refused() -> None:
    image, maps = np.zeros((1, 4, 4)), np.zeros((1, 4, 4))
    with pytest.raises(InvalidInput):
        max_sensitivity(image, maps, lambda x: maps, radius=-0.1, samples=3, rng=np.random.default_rng(0))
    with pytest.raises(InvalidInput):
        max_sensitivity(image, maps, lambda x: maps, radius=0.1, samples=0, rng=np.random.default_rng(0))


@pytest.mark.parametrize("targets", [1, 3])
def test_one_value_per_target(targets) -> None:
    rng = np.random.default_rng(4)
    image = rng.normal(size=(5, 4, 3)).astype(np.float32)
    maps = rng.normal(size=(targets, 5, 4))
    values = max_sensitivity(
        image, maps, lambda perturbed: maps + perturbed[..., 0], radius=0.1, samples=3, rng=np.random.default_rng(5)
    )
    assert values.shape == (targets,) and (values > 0).all()
