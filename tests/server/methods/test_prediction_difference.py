"""Prediction difference analysis equals the paper's formula computed here with numpy and ONNX Runtime on the same
replacement patches, is reproducible from its seed, and finds the digit rather than the distracting strokes."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import onnxruntime as ort
import pytest
from support.models import ChannelsLast, SmallCNN, WithSoftmax, export, write_model
from support.servers import start_server

from onnxplain.client import Client, OnnxplainError, TopK
from onnxplain.server.demo import SAMPLES
from onnxplain.server.methods.prediction_difference import MarginalSampler

IMAGE_SHAPE = (3, 20, 18)
CLASSES = 5
TARGETS = [0, 2, 4]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, bytes]:
    torch_model = SmallCNN(channels=3, classes=CLASSES, seed=2).eval()
    nhwc_shape = (1, IMAGE_SHAPE[1], IMAGE_SHAPE[2], IMAGE_SHAPE[0])
    return {
        "cnn": export(torch_model, (1, *IMAGE_SHAPE)),
        "cnn_softmax": export(WithSoftmax(torch_model), (1, *IMAGE_SHAPE)),
        "cnn_nhwc": export(ChannelsLast(torch_model), nhwc_shape),
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory, models):
    repository = tmp_path_factory.mktemp("repository")
    for name, model in models.items():
        write_model(repository, name, model)
    server = start_server(repository)
    with Client(server.target, timeout=120) as connected:
        yield connected
    server.stop()


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Slide from 0 until the window reaches the border; the last window may stick out (it is cut there)."""
    starts = [0]
    while starts[-1] + window < size:
        starts.append(starts[-1] + stride)
    return starts


def reference_map(
    model: bytes, image: np.ndarray, targets: list[int], window, stride, num_samples: int, seed: int, laplace_n: int
) -> np.ndarray:
    """The paper's formula, one window and one sample at a time: WE = log2 odds p(c|x) - log2 odds of the mean over
    samples of p(c|x with the patch replaced), Laplace-corrected; each pixel averages the WE of covering windows."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    def probabilities(batch: np.ndarray) -> np.ndarray:
        logits = session.run(None, {"input": batch.astype(np.float32)})[0].astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def log2_odds(p: np.ndarray) -> np.ndarray:
        corrected = (p * laplace_n + 1) / (laplace_n + CLASSES)
        return np.log2(corrected / (1 - corrected))

    sampler = MarginalSampler(image, "NCHW", window, num_samples, seed)
    original = log2_odds(probabilities(image[None])[0, targets])
    _, height, width = image.shape
    total = np.zeros((len(targets), height, width))
    count = np.zeros((height, width))
    position = 0
    for top in window_starts(height, window[0], stride[0]):
        for left in window_starts(width, window[1], stride[1]):
            bottom, right = min(top + window[0], height), min(left + window[1], width)
            patches = sampler.patches(position)
            position += 1
            replaced = np.repeat(image[None], num_samples, axis=0)
            for sample in range(num_samples):
                replaced[sample, :, top:bottom, left:right] = patches[sample, :, : bottom - top, : right - left]
            without_patch = probabilities(replaced)[:, targets].mean(axis=0)
            evidence = original - log2_odds(without_patch)
            total[:, top:bottom, left:right] += evidence[:, None, None]
            count[top:bottom, left:right] += 1
    return total / count


@pytest.mark.parametrize(
    ("window", "stride", "num_samples", "seed", "laplace_n"),
    [
        ((4, 4), (2, 2), 3, 0, 100_000),
        ((5, 3), (3, 3), 4, 11, 1000),
        ((7, 7), (7, 7), 2, 5, 50),
        ((1, 1), (1, 1), 1, 3, 10),
    ],
)
def test_equals_the_formula_on_the_same_samples(client, models, window, stride, num_samples, seed, laplace_n) -> None:
    image = np.random.default_rng(3).normal(size=IMAGE_SHAPE).astype(np.float32)
    params = dict(window=list(window), stride=list(stride), num_samples=num_samples, seed=seed, laplace_n=laplace_n)
    explanation = client.explain("cnn", image, method="prediction_difference", target=TARGETS, **params)
    expected = reference_map(models["cnn"], image, TARGETS, window, stride, num_samples, seed, laplace_n)
    assert explanation.attribution.shape == (len(TARGETS), *IMAGE_SHAPE[1:])
    np.testing.assert_allclose(explanation.attribution, expected, rtol=1e-5, atol=1e-5)
    windows = len(window_starts(IMAGE_SHAPE[1], window[0], stride[0])) * len(
        window_starts(IMAGE_SHAPE[2], window[1], stride[1])
    )
    assert explanation.cost.forward_passes == 1 + windows * num_samples


@pytest.mark.parametrize(("model", "score_space"), [("cnn", "probability"), ("cnn_softmax", "raw")])
def test_works_on_probabilities_whatever_the_model_outputs_or_the_request_reports(client, model, score_space) -> None:
    image = np.random.default_rng(4).normal(size=IMAGE_SHAPE).astype(np.float32)
    params = dict(method="prediction_difference", target=TARGETS, window=4, stride=2, num_samples=3)
    logits = client.explain("cnn", image, **params)
    other = client.explain(model, image, score_space=score_space, **params)
    np.testing.assert_allclose(other.attribution, logits.attribution, rtol=1e-4, atol=1e-4)


def test_nhwc_model_gives_the_same_map_as_its_nchw_twin(client) -> None:
    image = np.random.default_rng(5).normal(size=IMAGE_SHAPE).astype(np.float32)
    params = dict(method="prediction_difference", target=1, window=3, stride=2, num_samples=3, seed=9)
    nchw = client.explain("cnn", image, **params)
    nhwc = client.explain("cnn_nhwc", np.ascontiguousarray(image.transpose(1, 2, 0)), **params)
    np.testing.assert_allclose(nhwc.attribution, nchw.attribution, rtol=1e-5, atol=1e-5)


def test_the_same_seed_gives_the_same_map_and_another_seed_another(client) -> None:
    image = np.random.default_rng(6).normal(size=IMAGE_SHAPE).astype(np.float32)
    params = dict(method="prediction_difference", target=TopK(2), window=4, stride=2, num_samples=2)
    first = client.explain("cnn", image, seed=1, **params)
    again = client.explain("cnn", image, seed=1, **params)
    other = client.explain("cnn", image, seed=2, **params)
    np.testing.assert_array_equal(again.attribution, first.attribution)
    assert np.abs(other.attribution - first.attribution).max() > 1e-3


def test_sampler_draws_from_the_images_per_channel_gaussian() -> None:
    rng = np.random.default_rng(7)
    image = rng.normal(size=IMAGE_SHAPE) * np.array([0.5, 2.0, 1.0])[:, None, None] + [[[3.0]], [[-1.0]], [[0.0]]]
    image = image.astype(np.float32)
    sampler = MarginalSampler(image, "NCHW", (4, 3), 4000, seed=0)
    patches = sampler.patches(0)
    assert patches.shape == (4000, 3, 4, 3) and patches.dtype == np.float32
    drawn = patches.transpose(1, 0, 2, 3).reshape(3, -1)
    pixels = image.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(drawn.mean(axis=1), pixels.mean(axis=1), atol=0.05)
    np.testing.assert_allclose(drawn.std(axis=1), pixels.std(axis=1), rtol=0.03)
    # Pixels of a patch are drawn independently of each other.
    assert abs(np.corrcoef(patches[:, 0, 0, 0], patches[:, 0, 1, 1])[0, 1]) < 0.06
    assert not np.allclose(sampler.patches(1), patches)
    np.testing.assert_array_equal(MarginalSampler(image, "NCHW", (4, 3), 4000, seed=0).patches(0), patches)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        (dict(window=21), "window"),
        (dict(window=0), "window"),
        (dict(window=3, stride=4), "stride"),
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=2.5), "num_samples"),
        (dict(seed=-1), "seed"),
        (dict(laplace_n=0), "laplace_n"),
        (dict(laplace_n="many"), "laplace_n"),
    ],
)
def test_bad_parameters_are_invalid_arguments_naming_them(client, params, named) -> None:
    image = np.zeros(IMAGE_SHAPE, dtype=np.float32)
    with pytest.raises(OnnxplainError) as caught:
        client.explain("cnn", image, method="prediction_difference", **params)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"'{named}'" in str(caught.value)


@pytest.mark.parametrize("digit", [4, 6, 7])
def test_puts_more_evidence_on_the_digit_than_on_the_strokes(demo_client: Client, digit: int) -> None:
    explanation = demo_client.explain("digits", SAMPLES / f"digit_{digit}_strokes.png", method="prediction_difference")
    assert explanation.targets == [digit]
    # The paper's 10-pixel window on 224 images scales to 1 pixel on these 28x28 inputs, non-overlapping.
    assert explanation.parameters["window"] == explanation.parameters["stride"] == [1, 1]
    assert explanation.cost.forward_passes == 1 + 28 * 28 * 10
    mask = cv2.imread(str(SAMPLES / f"digit_{digit}_strokes_mask.png"), cv2.IMREAD_GRAYSCALE)
    mask = cv2.resize(mask, (28, 28), interpolation=cv2.INTER_NEAREST)
    digit_mean = explanation.attribution[mask == 1].mean()
    stroke_mean = explanation.attribution[mask == 2].mean()
    assert digit_mean > 3 * max(stroke_mean, 0.0) and digit_mean > 0.5, (digit_mean, stroke_mean)
