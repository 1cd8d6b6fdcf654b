"""lime, kernel_shap and feature_ablation end to end, each against an independent reference on the same torch model:
lime against sklearn's Ridge fitted as lime_image fits it, kernel_shap against Shapley values by brute force,
feature_ablation against Captum's FeatureAblation with the same feature mask."""

from __future__ import annotations

import itertools
import math

import cv2
import grpc
import numpy as np
import pytest
import torch
from captum.attr import FeatureAblation
from sklearn.linear_model import Ridge
from sklearn.metrics import pairwise_distances
from support.models import SmallCNN
from support.servers import layout_twins_client

from onnxplain.client import OnnxplainError
from onnxplain.client.tensors import encode_tensor
from onnxplain.server.demo import SAMPLES
from onnxplain.server.methods.kernel_shap import shap_coalitions
from onnxplain.server.methods.lime import lime_samples
from onnxplain.v1 import explain_service_pb2 as pb

IMAGE_SHAPE = (3, 20, 18)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def torch_model() -> SmallCNN:
    return SmallCNN(channels=3, classes=5, seed=2).eval()


@pytest.fixture(scope="module")
def client(tmp_path_factory, torch_model):
    with layout_twins_client(tmp_path_factory.mktemp("repository"), torch_model, IMAGE_SHAPE) as connected:
        yield connected


def random_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=IMAGE_SHAPE).astype(np.float32)


def blocks(ids: list[list[int]]) -> np.ndarray:
    """A (20, 18) segment map of rectangular blocks: ids[r][c] is the id of block (r, c)."""
    rows, cols = len(ids), len(ids[0])
    row_of = np.arange(IMAGE_SHAPE[1]) * rows // IMAGE_SHAPE[1]
    col_of = np.arange(IMAGE_SHAPE[2]) * cols // IMAGE_SHAPE[2]
    return np.asarray(ids)[row_of[:, None], col_of[None, :]]


def renumbered(segments: np.ndarray) -> np.ndarray:
    """Ids 0..M-1 in increasing order of the original ids, written out by hand."""
    numbering = {old: new for new, old in enumerate(sorted(set(segments.ravel().tolist())))}
    return np.vectorize(numbering.get)(segments)


def mean_fill(image: np.ndarray, segments: np.ndarray) -> np.ndarray:
    fill = np.empty_like(image)
    for segment in np.unique(segments):
        inside = segments == segment
        for channel in range(image.shape[0]):
            fill[channel][inside] = image[channel][inside].mean()
    return fill


def keeping(image: np.ndarray, fill: np.ndarray, segments: np.ndarray, kept: set[int]) -> np.ndarray:
    mask = np.isin(segments, sorted(kept))
    return np.where(mask[None], image, fill)


def torch_scores(model: torch.nn.Module, images: list[np.ndarray], targets: list[int]) -> np.ndarray:
    with torch.no_grad():
        scores = model(torch.from_numpy(np.stack(images).astype(np.float32))).double().numpy()
    return scores[:, targets]


def segment_values(attribution: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """(T, M) value of each segment, checking the map is constant over each segment."""
    count = segments.max() + 1
    values = np.stack([attribution[:, segments == j][:, 0] for j in range(count)], axis=1)
    np.testing.assert_array_equal(attribution, values[:, segments])
    return values


# --- lime -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("baseline", "kernel_width"), [("mean", 0.25), (0.0, 0.5)])
def test_lime_equals_lime_image_fit_on_the_same_samples(client, torch_model, baseline, kernel_width) -> None:
    image = random_image(11)
    client_segments = blocks([[7, 3, 3], [9, 12, 40], [9, 5, 5]])
    targets, num_samples, seed = [0, 3], 60, 5
    explanation = client.explain(
        "cnn",
        image,
        method="lime",
        target=targets,
        segments=client_segments,
        num_samples=num_samples,
        kernel_width=kernel_width,
        seed=seed,
        baseline=baseline,
    )
    segments = renumbered(client_segments)
    np.testing.assert_array_equal(explanation.segments, segments)
    assert explanation.parameters["segmentation"] == "client"
    # The first sample is the unaltered image: 1 pass for the request + num_samples - 1.
    assert explanation.cost.forward_passes == num_samples

    count = segments.max() + 1
    keep = lime_samples(num_samples, count, seed)
    fill = mean_fill(image, segments) if baseline == "mean" else np.full_like(image, baseline)
    perturbed = [keeping(image, fill, segments, set(np.flatnonzero(row))) for row in keep]
    scores = torch_scores(torch_model, perturbed, targets)
    distances = pairwise_distances(keep.astype(int), np.ones((1, count)), metric="cosine").ravel()
    weights = np.sqrt(np.exp(-(distances**2) / kernel_width**2))
    for index in range(len(targets)):
        ridge = Ridge(alpha=1.0, fit_intercept=True).fit(keep.astype(float), scores[:, index], sample_weight=weights)
        np.testing.assert_allclose(explanation.attribution[index], ridge.coef_[segments], rtol=1e-4, atol=2e-5)


def test_lime_samples_start_all_on_and_are_fair_coins() -> None:
    keep = lime_samples(4000, 30, seed=1)
    assert keep.shape == (4000, 30) and keep.dtype == bool
    assert keep[0].all()
    assert abs(keep[1:].mean() - 0.5) < 0.01
    np.testing.assert_array_equal(keep, lime_samples(4000, 30, seed=1))
    assert not np.array_equal(keep, lime_samples(4000, 30, seed=2))


# --- kernel_shap --------------------------------------------------------------------------------------------------


def brute_force_shapley(value: dict[frozenset[int], np.ndarray], count: int) -> np.ndarray:
    """phi_i = sum over S not containing i of |S|! (M - |S| - 1)! / M! (v(S + i) - v(S))."""
    phi = np.zeros((count, *next(iter(value.values())).shape))
    for i in range(count):
        others = [j for j in range(count) if j != i]
        for size in range(count):
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            for subset in itertools.combinations(others, size):
                phi[i] += weight * (value[frozenset(subset) | {i}] - value[frozenset(subset)])
    return phi.T


@pytest.mark.parametrize("baseline", [0.0, "mean"])
def test_kernel_shap_with_every_coalition_gives_the_exact_shapley_values(client, torch_model, baseline) -> None:
    image = random_image(12)
    segments = blocks([[0, 1], [2, 3]])
    targets = [1, 2, 4]
    explanation = client.explain(
        "cnn", image, method="kernel_shap", target=targets, segments=segments, num_samples=14, baseline=baseline
    )
    # Every proper coalition (2^4 - 2) plus the all-off image, plus the request's own pass.
    assert explanation.cost.forward_passes == 14 + 1 + 1

    fill = mean_fill(image, segments) if baseline == "mean" else np.full_like(image, baseline)
    coalitions = [frozenset(c) for size in range(5) for c in itertools.combinations(range(4), size)]
    scores = torch_scores(torch_model, [keeping(image, fill, segments, set(c)) for c in coalitions], targets)
    expected = brute_force_shapley(dict(zip(coalitions, scores, strict=True)), 4)
    np.testing.assert_allclose(segment_values(explanation.attribution, segments), expected, rtol=1e-5, atol=1e-5)


def test_kernel_shap_sampled_is_complete(client, torch_model) -> None:
    image = random_image(13)
    explanation = client.explain(
        "cnn", image, method="kernel_shap", target=[0, 4], segmentation="slic", n_segments=12, num_samples=40
    )
    segments = explanation.segments
    count = segments.max() + 1
    assert 4 <= count <= 24
    values = segment_values(explanation.attribution, segments)
    everything_off = mean_fill(image, segments)
    full, empty = torch_scores(torch_model, [image, everything_off], [0, 4])
    np.testing.assert_allclose(values.sum(axis=1), full - empty, rtol=1e-5, atol=1e-5)
    assert explanation.cost.forward_passes == 40 + 1 + 1


def test_kernel_shap_of_a_single_segment_is_the_whole_score_change(client, torch_model) -> None:
    image = random_image(24)
    segments = np.full(IMAGE_SHAPE[1:], 5)
    explanation = client.explain("cnn", image, method="kernel_shap", target=[0, 1], segments=segments, baseline=0.5)
    assert explanation.cost.forward_passes == 2
    full, empty = torch_scores(torch_model, [image, np.full_like(image, 0.5)], [0, 1])
    np.testing.assert_allclose(explanation.attribution[:, 0, 0], full - empty, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(explanation.segments, 0)


def test_shap_coalitions_follow_the_shapley_kernel_in_pairs() -> None:
    # 20000 < 2^16 - 2: sampled, not enumerated.
    keep, weights = shap_coalitions(20000, 16, seed=3)
    assert keep.shape == (20000, 16) and np.all(weights == 1.0)
    sizes = keep.sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= 15
    np.testing.assert_array_equal(keep[1::2], ~keep[0::2])
    # p(k) proportional to (M - 1) / (k (M - k)); each size's share within 1%.
    expected = np.array([15 / (k * (16 - k)) for k in range(1, 16)])
    observed = np.bincount(sizes, minlength=16)[1:] / len(sizes)
    np.testing.assert_allclose(observed, expected / expected.sum(), atol=0.01)
    # Within a size, every segment is equally likely to be kept.
    np.testing.assert_allclose(keep[sizes == 8].mean(axis=0), 0.5, atol=0.05)


def test_shap_coalitions_enumerate_every_proper_coalition_once_when_the_budget_allows() -> None:
    keep, weights = shap_coalitions(14, 4, seed=0)
    assert sorted(map(tuple, keep.astype(int))) == sorted(itertools.product([0, 1], repeat=4))[1:-1]
    sizes = keep.sum(axis=1)
    np.testing.assert_allclose(weights, 3 / (np.array([math.comb(4, k) for k in sizes]) * sizes * (4 - sizes)))


# --- feature_ablation ---------------------------------------------------------------------------------------------


def captum_ablation(model, image: np.ndarray, segments: np.ndarray, target: int, baseline: float) -> np.ndarray:
    mask = torch.from_numpy(segments.astype(np.int64))[None, None]
    attribution = FeatureAblation(model).attribute(
        torch.from_numpy(image)[None], baselines=baseline, target=target, feature_mask=mask, perturbations_per_eval=8
    )
    return attribution[0].detach().numpy()


@pytest.mark.parametrize("baseline", [0.0, 0.7])
def test_feature_ablation_equals_captum(client, torch_model, baseline) -> None:
    image = random_image(14)
    segments = blocks([[0, 1, 2], [3, 4, 5], [6, 7, 7]])
    explanation = client.explain(
        "cnn", image, method="feature_ablation", target=[0, 2], segments=segments, baseline=baseline
    )
    assert explanation.cost.forward_passes == 1 + 8
    for index, target in enumerate([0, 2]):
        for channel in captum_ablation(torch_model, image, segments, target, baseline):
            np.testing.assert_allclose(explanation.attribution[index], channel, rtol=1e-5, atol=1e-5)


def test_feature_ablation_without_segments_ablates_a_grid(client, torch_model) -> None:
    image = random_image(15)
    explanation = client.explain("cnn", image, method="feature_ablation", target=3, segmentation="grid", n_segments=6)
    segments = explanation.segments
    # 20 x 18 in about 6 cells: 3 rows of 2 columns, each a rectangle.
    np.testing.assert_array_equal(segments, blocks([[0, 1], [2, 3], [4, 5]]))
    np.testing.assert_allclose(
        explanation.attribution, captum_ablation(torch_model, image, segments, 3, 0.0)[0], rtol=1e-5, atol=1e-5
    )


# --- shared behaviour ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lime", "kernel_shap", "feature_ablation"])
def test_nhwc_model_gives_the_same_map_and_superpixels_as_its_nchw_twin(client, method) -> None:
    image = random_image(16)
    params = {"n_segments": 10, "baseline": "blur"} | ({} if method == "feature_ablation" else {"num_samples": 30})
    nchw = client.explain("cnn", image, method=method, target=1, **params)
    nhwc = client.explain("cnn_nhwc", np.ascontiguousarray(image.transpose(1, 2, 0)), method=method, target=1, **params)
    np.testing.assert_array_equal(nhwc.segments, nchw.segments)
    np.testing.assert_allclose(nhwc.attribution, nchw.attribution, rtol=1e-4, atol=1e-5)


def test_each_image_of_a_request_gets_its_own_segments(client) -> None:
    images = [random_image(17), random_image(18)]
    given = blocks([[0, 1], [1, 0]])
    first, second = client.explain(
        "cnn", images, method="lime", segments=[given, None], num_samples=20, n_segments=9, segmentation="grid"
    )
    np.testing.assert_array_equal(first.segments, given)
    np.testing.assert_array_equal(second.segments, blocks([[0, 1, 2], [3, 4, 5], [6, 7, 8]]))


def test_occlusion_returns_no_segments(client) -> None:
    assert client.explain("cnn", random_image(19), method="occlusion", window=5).segments is None


@pytest.mark.parametrize("method", ["lime", "kernel_shap", "feature_ablation"])
@pytest.mark.parametrize("digit", [4, 6, 7])
def test_superpixel_methods_put_the_evidence_on_the_digit_not_the_strokes(demo_client, method, digit) -> None:
    explanation = demo_client.explain("digits", SAMPLES / f"digit_{digit}_strokes.png", method=method)
    assert explanation.targets == [digit]
    assert 25 <= explanation.segments.max() + 1 <= 75
    mask = cv2.imread(str(SAMPLES / f"digit_{digit}_strokes_mask.png"), cv2.IMREAD_GRAYSCALE)
    mask = cv2.resize(mask, (28, 28), interpolation=cv2.INTER_NEAREST)
    digit_mean = explanation.attribution[mask == 1].mean()
    stroke_mean = explanation.attribution[mask == 2].mean()
    assert digit_mean > 3 * max(stroke_mean, 0.0) and digit_mean > 0.1, (digit_mean, stroke_mean)


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        (np.zeros((20, 17), dtype=np.int32), "segments shape [20, 17] does not match"),
        (np.zeros((18, 20), dtype=np.int32), "segments shape [18, 20] does not match"),
        (np.zeros((3, 20, 18), dtype=np.int32), "segments shape [3, 20, 18] does not match"),
        (np.zeros((20, 18), dtype=np.float32), "segments must be integers"),
        (np.full((20, 18), -1, dtype=np.int32), "non-negative"),
    ],
)
def test_bad_segments_are_invalid_argument(client, segments, message) -> None:
    image = pb.Image(tensor=encode_tensor(random_image(20)), segments=encode_tensor(segments))
    with pytest.raises(OnnxplainError) as error:
        client.explain("cnn", image, method="feature_ablation")
    assert error.value.code == INVALID
    assert message in error.value.message and "image 0" in error.value.message


@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        ("lime", {"num_samples": 0}, "'num_samples'"),
        ("kernel_shap", {"num_samples": -3}, "'num_samples'"),
        ("lime", {"kernel_width": 0.0}, "'kernel_width'"),
        ("lime", {"kernel_width": -1.0}, "'kernel_width'"),
        ("lime", {"n_segments": 1}, "'n_segments'"),
        ("feature_ablation", {"n_segments": 0}, "'n_segments'"),
        ("kernel_shap", {"segmentation": "watershed"}, "'segmentation'"),
        ("lime", {"seed": -1}, "'seed'"),
        ("feature_ablation", {"baseline": "noise"}, "'baseline'"),
        # More segments than the samples can fit.
        ("lime", {"segmentation": "grid", "n_segments": 30, "num_samples": 30}, "'num_samples'"),
        ("kernel_shap", {"segmentation": "grid", "n_segments": 30, "num_samples": 20}, "'num_samples'"),
        # Beyond the server's 100000 passes per image, refused before anything is allocated.
        ("lime", {"num_samples": 10**9}, "'num_samples'"),
        ("kernel_shap", {"num_samples": 10**9}, "'num_samples'"),
    ],
)
def test_bad_parameters_are_invalid_argument_naming_the_parameter(client, method, params, named) -> None:
    with pytest.raises(OnnxplainError) as error:
        client.explain("cnn", random_image(21), method=method, **params)
    assert error.value.code == INVALID
    assert named in error.value.message


def test_more_client_segments_than_samples_are_invalid_argument(client) -> None:
    every_pixel = np.arange(20 * 18).reshape(20, 18)
    with pytest.raises(OnnxplainError) as error:
        client.explain("cnn", random_image(22), method="kernel_shap", segments=every_pixel, num_samples=100)
    assert error.value.code == INVALID
    assert "'num_samples'" in error.value.message and "360 segment" in error.value.message
    # feature_ablation has no fit: one pass per segment is all it needs.
    explanation = client.explain("cnn", random_image(22), method="feature_ablation", segments=every_pixel)
    assert explanation.cost.forward_passes == 1 + 20 * 18
