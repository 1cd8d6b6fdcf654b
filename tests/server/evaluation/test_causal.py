"""Deletion and insertion equal the RISE authors' CausalMetric (eclique/RISE evaluation.py), transcribed below in
torch, on a CNN run by ONNX Runtime and on a numpy linear model; the blur equals their conv2d substrate."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy.ndimage import gaussian_filter
from support.models import ChannelsLast, WithSoftmax, export

from onnxplain.server.evaluation.causal import area_under_curve, blur, deletion, insertion

IMAGE_SHAPE = (3, 10, 9)
TARGETS = [0, 2, 4]


def gkern(klen: int, nsig: float, channels: int) -> torch.Tensor:
    """The official kernel, for `channels` instead of 3."""
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((channels, channels, klen, klen))
    for channel in range(channels):
        kern[channel, channel] = k
    return torch.from_numpy(kern.astype("float32"))


def official_blur(img_tensor: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.conv2d(img_tensor, gkern(11, 5, img_tensor.shape[1]), padding=11 // 2)


def official_auc(arr: np.ndarray) -> float:
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def official_single_run(model, img_tensor, explanation, mode, step, c) -> np.ndarray:
    """CausalMetric.single_run with the class c given and HW, the channel count from the image."""
    channels, height, width = img_tensor.shape[1:]
    hw = height * width
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start = img_tensor.clone()
        finish = torch.zeros_like(img_tensor)
    else:
        start = official_blur(img_tensor)
        finish = img_tensor.clone()
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1), axis=-1)
    for i in range(n_steps + 1):
        with torch.no_grad():
            pred = model(start)
        scores[i] = pred[0, c]
        if i < n_steps:
            coords = salient_order[:, step * i : step * (i + 1)]
            start.numpy().reshape(1, channels, hw)[0, :, coords] = finish.numpy().reshape(1, channels, hw)[0, :, coords]
    return scores


def limited(score, batch_size: int):
    def checked(inputs: np.ndarray) -> np.ndarray:
        assert len(inputs) <= batch_size
        return score(inputs)

    return checked


@pytest.fixture(scope="module")
def onnx_scores(cnn):
    """Softmax scores of TARGETS from the CNN exported to ONNX, per layout (the official model ends in Softmax)."""
    sessions = {
        "NCHW": ort.InferenceSession(export(WithSoftmax(cnn), (1, *IMAGE_SHAPE))),
        "NHWC": ort.InferenceSession(export(ChannelsLast(WithSoftmax(cnn)), (1, 10, 9, 3))),
    }

    def scores(layout: str):
        return lambda inputs: sessions[layout].run(None, {"input": inputs})[0][:, TARGETS]

    return scores


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("channels", [3, 1])
def test_blur_equals_the_official_conv2d(layout, channels) -> None:
    image = np.random.default_rng(0).normal(size=(channels, 16, 13)).astype(np.float32)
    expected = official_blur(torch.from_numpy(image)[None])[0].numpy()
    ours = blur(image if layout == "NCHW" else image.transpose(1, 2, 0), layout)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours if layout == "NCHW" else ours.transpose(2, 0, 1), expected, atol=1e-6)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(("game", "mode"), [(deletion, "del"), (insertion, "ins")])
def test_cnn_curves_equal_the_official_code(cnn, onnx_scores, layout, game, mode) -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=IMAGE_SHAPE).astype(np.float32)
    maps = rng.normal(size=(len(TARGETS), *IMAGE_SHAPE[1:])).astype(np.float32)
    step, batch_size = 7, 5  # 90 pixels: 13 steps, the last one short; 42 states in batches of 5
    model_input = image if layout == "NCHW" else image.transpose(1, 2, 0)
    curves = game(model_input, maps, layout, limited(onnx_scores(layout), batch_size), step=step, batch_size=batch_size)
    assert curves.shape == (3, 14)
    softmax_cnn = WithSoftmax(cnn)
    for index, target in enumerate(TARGETS):
        expected = official_single_run(softmax_cnn, torch.from_numpy(image)[None], maps[index], mode, step, target)
        np.testing.assert_allclose(curves[index], expected, atol=1e-5)
        np.testing.assert_allclose(area_under_curve(curves)[index], official_auc(expected), atol=1e-5)


@pytest.mark.parametrize(("game", "mode"), [(deletion, "del"), (insertion, "ins")])
@pytest.mark.parametrize("step", [1, 4, 30])
def test_linear_curves_equal_the_official_code_even_with_tied_saliency(game, mode, step) -> None:
    rng = np.random.default_rng(2)
    image = rng.normal(size=(2, 5, 6)).astype(np.float32)
    weights = rng.normal(size=(2, 60))
    maps = np.round(rng.normal(size=(2, 5, 6)), 0).astype(np.float32)  # few distinct values: many ties

    def linear(inputs: np.ndarray) -> np.ndarray:
        return inputs.reshape(len(inputs), -1).astype(np.float64) @ weights.T

    curves = game(image, maps, "NCHW", limited(linear, 3), step=step, batch_size=3)
    for target in range(2):

        def model(tensor: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(linear(tensor.numpy()))

        expected = official_single_run(model, torch.from_numpy(image)[None], maps[target], mode, step, target)
        np.testing.assert_allclose(curves[target], expected, atol=1e-5)


def test_the_curve_runs_from_start_to_finish() -> None:
    image = np.random.default_rng(3).normal(size=(4, 4, 3)).astype(np.float32)
    maps = np.random.default_rng(4).normal(size=(1, 4, 4))

    def total(inputs: np.ndarray) -> np.ndarray:
        return inputs.reshape(len(inputs), -1).sum(axis=1, keepdims=True)

    deleted = deletion(image, maps, "NHWC", total, step=5, batch_size=64)
    inserted = insertion(image, maps, "NHWC", total, step=5, batch_size=64)
    np.testing.assert_allclose(deleted[0, [0, -1]], [image.sum(), 0.0], atol=1e-5)
    np.testing.assert_allclose(inserted[0, [0, -1]], [blur(image, "NHWC").sum(), image.sum()], atol=1e-5)


def test_area_under_a_constant_curve_is_the_constant() -> None:
    curves = np.array([[0.5] * 5, [0.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(area_under_curve(curves), [0.5, (4 - 0.5) / 4])


@pytest.mark.parametrize("targets", [1, 3])
@pytest.mark.parametrize("game", [deletion, insertion])
def test_curve_shape(game, targets) -> None:
    image = np.zeros((3, 4, 5), dtype=np.float32)
    maps = np.random.default_rng(5).normal(size=(targets, 4, 5))
    curves = game(image, maps, "NCHW", lambda inputs: np.zeros((len(inputs), targets)), step=3, batch_size=4)
    assert curves.shape == (targets, 8)
    assert area_under_curve(curves).shape == (targets,)
