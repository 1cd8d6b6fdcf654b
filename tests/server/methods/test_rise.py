"""RISE equals the published formula computed here with ONNX Runtime on the same masks; its masks are the official
code's (checked by hand below), reproducible from the seed whatever the batching; bad parameters are refused by
name; a long call stops at its deadline; and on the demo digits it finds the digit rather than the strokes."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import onnxruntime as ort
import pytest
from support.models import SmallCNN, export, write_model
from support.processes import cpu_of, cpu_until_idle
from support.servers import start_server

from onnxplain.client import Client, OnnxplainError, PartialMap
from onnxplain.server.demo import SAMPLES
from onnxplain.server.methods.rise_masks import rise_masks, upsample_grids

IMAGE_SHAPE = (3, 20, 18)
LARGE_SIDE = 160
TARGETS = [0, 2, 4]
MAX_PASSES = 50_000


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    return export(SmallCNN(channels=3, classes=5, seed=2), (1, *IMAGE_SHAPE))


@pytest.fixture(scope="module")
def server(tmp_path_factory, onnx_model):
    repository = tmp_path_factory.mktemp("repository")
    write_model(repository, "cnn", onnx_model)
    write_model(repository, "cnn_batch7", onnx_model, config={"max_batch_size": 7})
    write_model(repository, "cnn_large", export(SmallCNN(), (1, 3, LARGE_SIDE, LARGE_SIDE)))
    running = start_server(repository, "--max-forward-passes", str(MAX_PASSES))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    with Client(server.target, timeout=120) as connected:
        yield connected


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).normal(size=IMAGE_SHAPE).astype(np.float32)


def reference_rise(
    onnx_model: bytes,
    image: np.ndarray,
    targets: list[int],
    *,
    num_masks: int,
    grid_size: int,
    keep_prob: float,
    seed: int,
    fill: np.ndarray,
    normalization: str,
    probabilities: bool = False,
) -> np.ndarray:
    """The paper's S = sum_i f(x * M_i + fill * (1 - M_i)) M_i / (N p), or Xplique's / sum_i M_i, in float64."""
    masks = rise_masks(seed, 0, num_masks, IMAGE_SHAPE[1:], grid_size, keep_prob)
    inputs = (image[None] * masks[:, None] + fill[None] * (1 - masks[:, None])).astype(np.float32)
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    scores = session.run(None, {"input": inputs})[0].astype(np.float64)
    if probabilities:
        exponentials = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = exponentials / exponentials.sum(axis=1, keepdims=True)
    weighted = np.einsum("nt,nhw->thw", scores[:, targets], masks.astype(np.float64))
    if normalization == "keep_prob":
        return weighted / (num_masks * keep_prob)
    return weighted / masks.sum(axis=0, dtype=np.float64)


def assert_same_map(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal to 1e-5 of the map's scale (pixels where a signed sum cancels have no meaningful relative error)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(
    ("normalization", "grid_size", "keep_prob", "fill", "seed"),
    [
        ("keep_prob", 7, 0.5, 0.0, 0),
        ("mask_sum", 7, 0.5, 0.0, 1),
        ("keep_prob", 4, 0.2, -0.7, 5),
        ("mask_sum", 5, 0.8, "mean", 9),
        ("keep_prob", 3, 0.5, "blur", 2),
    ],
)
def test_rise_equals_the_published_formula(
    client, onnx_model, image, normalization, grid_size, keep_prob, fill, seed
) -> None:
    num_masks = 300
    explanation = client.explain(
        "cnn",
        image,
        method="rise",
        target=TARGETS,
        num_masks=num_masks,
        grid_size=grid_size,
        keep_prob=keep_prob,
        seed=seed,
        normalization=normalization,
        fill=fill,
    )
    if fill == "mean":
        fill_image = np.broadcast_to(image.mean(axis=(1, 2), keepdims=True), image.shape)
    elif fill == "blur":
        sigma = np.ceil(20 / grid_size) / 2  # half the larger grid cell: ceil(20 / 3) = 7 rows
        fill_image = np.stack([cv2.GaussianBlur(c, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for c in image])
    else:
        fill_image = np.full_like(image, fill)
    expected = reference_rise(
        onnx_model,
        image,
        TARGETS,
        num_masks=num_masks,
        grid_size=grid_size,
        keep_prob=keep_prob,
        seed=seed,
        fill=fill_image,
        normalization=normalization,
    )
    assert explanation.attribution.shape == (3, *IMAGE_SHAPE[1:])
    assert explanation.attribution.dtype == np.float32
    assert explanation.cost.forward_passes == 1 + num_masks
    assert_same_map(explanation.attribution, expected)


def test_rise_on_probabilities_equals_the_official_softmax_setting(client, onnx_model, image) -> None:
    explanation = client.explain(
        "cnn", image, method="rise", target=TARGETS, score_space="probability", num_masks=200, seed=4
    )
    expected = reference_rise(
        onnx_model,
        image,
        TARGETS,
        num_masks=200,
        grid_size=7,
        keep_prob=0.5,
        seed=4,
        fill=np.zeros_like(image),
        normalization="keep_prob",
        probabilities=True,
    )
    assert_same_map(explanation.attribution, expected)


def test_the_defaults_are_the_papers(client, image) -> None:
    explanation = client.explain("cnn", image, method="rise", num_masks=50)
    assert explanation.parameters == {
        "num_masks": 50,
        "grid_size": 7,
        "keep_prob": 0.5,
        "seed": 0,
        "normalization": "keep_prob",
        "fill": 0.0,
    }


def test_a_seed_gives_the_same_map_whatever_the_batch_size(client, image) -> None:
    params = {"target": TARGETS, "num_masks": 150, "seed": 11}
    big_batches = client.explain("cnn", image, method="rise", **params)
    batches_of_7 = client.explain("cnn_batch7", image, method="rise", **params)
    assert batches_of_7.cost.batch_size == 7 and big_batches.cost.batch_size > 7
    np.testing.assert_allclose(batches_of_7.attribution, big_batches.attribution, rtol=1e-6, atol=1e-6)
    again = client.explain("cnn", image, method="rise", **params)
    np.testing.assert_array_equal(again.attribution, big_batches.attribution)
    other_seed = client.explain("cnn", image, method="rise", **{**params, "seed": 12})
    assert np.abs(other_seed.attribution - big_batches.attribution).max() > 1e-3 * np.abs(big_batches.attribution).max()


def test_partial_maps_are_the_maps_of_the_masks_so_far(client) -> None:
    image = np.random.default_rng(1).random((3, LARGE_SIDE, LARGE_SIDE), dtype=np.float32)
    partials: list[PartialMap] = []
    # Partial maps come every half second; leaving the loop cancels the rest of the call.
    for event in client.explain_stream("cnn_large", image, method="rise", target=[0, 3], num_masks=MAX_PASSES, seed=3):
        if isinstance(event, PartialMap):
            partials.append(event)
            if len(partials) == 2:
                break
    assert [p.class_index for p in partials] == [0, 3]
    done = partials[0].progress.passes_done
    assert 0 < done < MAX_PASSES and partials[1].progress.passes_done == done
    fewer_masks = client.explain("cnn_large", image, method="rise", target=[0, 3], num_masks=done, seed=3)
    for partial, expected in zip(partials, fewer_masks.attribution, strict=True):
        np.testing.assert_allclose(partial.attribution, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_mask_statistics() -> None:
    masks = rise_masks(seed=7, start=0, stop=2000, size=(20, 18), grid_size=7, keep_prob=0.3)
    assert masks.shape == (2000, 20, 18) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert abs(masks.mean() - 0.3) < 0.01
    # Soft: bilinear upsampling leaves values strictly between 0 and 1 along cell edges.
    assert ((masks > 0.01) & (masks < 0.99)).mean() > 0.2


def test_masks_depend_only_on_seed_and_index() -> None:
    everything = rise_masks(seed=5, start=0, stop=300, size=(20, 18))
    np.testing.assert_array_equal(rise_masks(seed=5, start=120, stop=190, size=(20, 18)), everything[120:190])
    np.testing.assert_array_equal(rise_masks(seed=5, start=0, stop=10, size=(20, 18)), everything[:10])
    assert not np.array_equal(rise_masks(seed=6, start=0, stop=10, size=(20, 18)), everything[:10])


def test_upsampling_is_skimage_bilinear_with_mirrored_borders_worked_by_hand() -> None:
    # grid_size 2 on 4 x 4: cell 2, upsampled to 6 samples at grid positions (o + 0.5) / 3 - 0.5 =
    # -1/3 (mirrored to 1/3), 0, 1/3, 2/3, 1, 4/3 (mirrored to 2/3). A column [1, 0] therefore becomes
    # [2/3, 1, 2/3, 1/3, 0, 1/3]; shift 0 crops the first 4 samples, shift 1 the next 4.
    samples = np.array([2 / 3, 1, 2 / 3, 1 / 3, 0, 1 / 3])
    grid = np.array([[1.0, 1.0], [0.0, 0.0]])  # rows [1, 0], constant along columns
    masks = upsample_grids(np.stack([grid, grid, grid.T]), np.array([[0, 0], [1, 1], [1, 0]]), (4, 4))
    np.testing.assert_allclose(masks[0], np.repeat(samples[0:4, None], 4, axis=1), atol=1e-6)
    np.testing.assert_allclose(masks[1], np.repeat(samples[1:5, None], 4, axis=1), atol=1e-6)
    # Transposed grid: the profile runs along columns, cropped at column shift 0.
    np.testing.assert_allclose(masks[2], np.repeat(samples[None, 0:4], 4, axis=0), atol=1e-6)


@pytest.mark.parametrize(
    ("params", "name", "words"),
    [
        ({"num_masks": 0}, "num_masks", "positive"),
        ({"num_masks": -1}, "num_masks", "positive"),
        ({"num_masks": MAX_PASSES + 1}, "num_masks", f"allows {MAX_PASSES}"),
        ({"keep_prob": 0.0}, "keep_prob", "between 0 and 1"),
        ({"keep_prob": 1.0}, "keep_prob", "between 0 and 1"),
        ({"keep_prob": 1.5}, "keep_prob", "between 0 and 1"),
        ({"grid_size": 1}, "grid_size", "at least 2"),
        ({"grid_size": 19}, "grid_size", "20x18"),
        ({"seed": -1}, "seed", "at least 0"),
        ({"normalization": "softmax"}, "normalization", "keep_prob, mask_sum"),
        ({"fill": "noise"}, "fill", "mean, blur"),
        ({"num_masks": 2.5}, "num_masks", "integer"),
    ],
)
def test_bad_parameters_are_refused_by_name(client, image, params, name, words) -> None:
    with pytest.raises(OnnxplainError) as caught:
        client.explain("cnn", image, method="rise", **params)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"'{name}'" in caught.value.message and words in caught.value.message, caught.value.message


def test_deadline_stops_a_long_rise_call(server, client) -> None:
    """Judged in the server's CPU seconds (a busy machine stretches wall time, not CPU time): after the deadline it
    spends a small share of what the whole call would cost, measured as 32 times a call with 1/32 of the masks."""
    image = np.random.default_rng(0).random((3, LARGE_SIDE, LARGE_SIDE), dtype=np.float32)
    part = cpu_of(server.process.pid, lambda: client.explain("cnn_large", image, method="rise", num_masks=1563))
    with pytest.raises(OnnxplainError) as caught:
        client.explain("cnn_large", image, method="rise", num_masks=MAX_PASSES, timeout=1.0)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    after = cpu_until_idle(server.process.pid)
    assert after < 0.25 * 32 * part, f"the server kept computing after the deadline: {after:.1f} CPU s"


@pytest.mark.parametrize("digit", [4, 6, 7])
def test_rise_puts_more_attribution_on_the_digit_than_on_the_strokes(demo_client: Client, digit: int) -> None:
    explanation = demo_client.explain("digits", SAMPLES / f"digit_{digit}_strokes.png", method="rise", num_masks=1000)
    assert explanation.targets == [digit]
    mask = cv2.imread(str(SAMPLES / f"digit_{digit}_strokes_mask.png"), cv2.IMREAD_GRAYSCALE)
    mask = cv2.resize(mask, (28, 28), interpolation=cv2.INTER_NEAREST)
    # RISE maps carry an offset (the mean score under masking); the empty background, which masking with 0 leaves
    # unchanged, shows it. Measured above it, the digit holds the evidence and the strokes none.
    background = explanation.attribution[mask == 0].mean()
    digit_excess = explanation.attribution[mask == 1].mean() - background
    stroke_excess = explanation.attribution[mask == 2].mean() - background
    assert digit_excess > 3 * max(stroke_excess, 0.0) and digit_excess > 0.1, (digit_excess, stroke_excess)
