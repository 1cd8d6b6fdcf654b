"""Occlusion equals Captum's Occlusion on the same model, and finds the digit rather than the distracting strokes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from support.models import SmallCNN
from support.servers import layout_twins_client

from onnxplain.client import Client, TopK
from onnxplain.server.demo import SAMPLES

IMAGE_SHAPE = (3, 20, 18)


@pytest.fixture(scope="module")
def torch_model() -> SmallCNN:
    return SmallCNN(channels=3, classes=5, seed=1).eval()


@pytest.fixture(scope="module")
def client(tmp_path_factory, torch_model):
    with layout_twins_client(tmp_path_factory.mktemp("repository"), torch_model, IMAGE_SHAPE) as connected:
        yield connected


def captum_occlusion(model, image: np.ndarray, target: int, window, stride, baseline: float) -> np.ndarray:
    occlusion = Occlusion(model)
    channels = image.shape[0]
    attribution = occlusion.attribute(
        torch.from_numpy(image)[None],
        sliding_window_shapes=(channels, *window),
        strides=(channels, *stride),
        target=target,
        baselines=baseline,
        perturbations_per_eval=16,
    )
    return attribution[0].detach().numpy()


@pytest.mark.parametrize(
    ("window", "stride", "baseline"),
    [((4, 4), (2, 2), 0.0), ((5, 3), (3, 3), 0.5), ((7, 7), (7, 7), -1.0), ((1, 1), (1, 1), 0.0)],
)
def test_occlusion_equals_captum(client, torch_model, window, stride, baseline) -> None:
    image = np.random.default_rng(3).normal(size=IMAGE_SHAPE).astype(np.float32)
    explanation = client.explain(
        "cnn", image, method="occlusion", target=[0, 2, 4], window=list(window), stride=list(stride), baseline=baseline
    )
    assert explanation.attribution.shape == (3, *IMAGE_SHAPE[1:])
    for index, target in enumerate([0, 2, 4]):
        expected = captum_occlusion(torch_model, image, target, window, stride, baseline)
        # Captum spreads the window over every channel equally: each channel's map is ours.
        for channel in expected:
            np.testing.assert_allclose(explanation.attribution[index], channel, rtol=1e-5, atol=1e-5)


def test_all_classes_cost_the_same_passes_as_one(client) -> None:
    image = np.random.default_rng(4).normal(size=IMAGE_SHAPE).astype(np.float32)
    one = client.explain("cnn", image, method="occlusion", window=4, stride=2)
    every = client.explain("cnn", image, method="occlusion", target=TopK(5), window=4, stride=2)
    assert every.attribution.shape == (5, *IMAGE_SHAPE[1:])
    assert every.cost.forward_passes == one.cost.forward_passes == 1 + 9 * 8
    np.testing.assert_allclose(every.attribution[every.targets.index(one.targets[0])], one.attribution, atol=1e-6)


def test_nhwc_model_gives_the_same_map_as_its_nchw_twin(client) -> None:
    image = np.random.default_rng(5).normal(size=IMAGE_SHAPE).astype(np.float32)
    nchw = client.explain("cnn", image, method="occlusion", target=1, window=3, stride=2)
    nhwc = client.explain(
        "cnn_nhwc", np.ascontiguousarray(image.transpose(1, 2, 0)), method="occlusion", target=1, window=3, stride=2
    )
    np.testing.assert_allclose(nhwc.attribution, nchw.attribution, rtol=1e-5, atol=1e-5)


def test_input_shaped_attribution_repeats_the_map_over_channels(client) -> None:
    image = np.random.default_rng(6).normal(size=IMAGE_SHAPE).astype(np.float32)
    explanation = client.explain("cnn", image, method="occlusion", window=4, attribution_shape="input")
    assert explanation.attribution.shape == IMAGE_SHAPE
    np.testing.assert_array_equal(explanation.attribution[0], explanation.attribution[2])


@pytest.mark.parametrize("digit", [4, 6, 7])
def test_occlusion_puts_more_attribution_on_the_digit_than_on_the_strokes(demo_client: Client, digit: int) -> None:
    explanation = demo_client.explain(
        "digits", SAMPLES / f"digit_{digit}_strokes.png", method="occlusion", window=4, stride=2
    )
    assert explanation.targets == [digit]
    mask = cv2.imread(str(SAMPLES / f"digit_{digit}_strokes_mask.png"), cv2.IMREAD_GRAYSCALE)
    mask = cv2.resize(mask, (28, 28), interpolation=cv2.INTER_NEAREST)
    digit_mean = explanation.attribution[mask == 1].mean()
    stroke_mean = explanation.attribution[mask == 2].mean()
    assert digit_mean > 3 * max(stroke_mean, 0.0) and digit_mean > 0.5, (digit_mean, stroke_mean)
