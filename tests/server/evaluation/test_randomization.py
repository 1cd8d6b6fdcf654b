"""The model-parameter randomisation check against a cascade rebuilt in the test (numpy on the ONNX file, ONNX Runtime,
scipy's Spearman), and on the trained demo model with real gradient methods."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import scipy.stats
import torch
from onnx import numpy_helper
from support.models import SmallCNN, export, identity_classifier, write_model

from onnxplain.server.demo import REPOSITORY, SAMPLES
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.engine.randomize import WeightedLayer
from onnxplain.server.errors import FailedPrecondition, InvalidInput
from onnxplain.server.evaluation.randomization import (
    average_ranks,
    cascade_groups,
    parameter_randomization,
    plan_cascade,
    rank_correlation,
)
from onnxplain.server.methods.base import ExplainJob, Scorer
from onnxplain.server.methods.parameters import parse_parameters
from onnxplain.server.methods.registry import get_method
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel, ModelSource
from onnxplain.server.settings import ServerSettings

IMAGE_SHAPE = (3, 10, 10)
TARGETS = [0, 3]
# SmallCNN's learned tensors by layer, top-down, as the legacy exporter names them (its parameter names).
LAYER_TENSORS = [["head.weight", "head.bias"], ["features.3.weight", "features.3.bias"], ["features.0.weight"]]
LAYER_NAMES = ["/head/Gemm", "/features/features.3/Conv", "/features/features.0/Conv"]


def load(repository: Path, name: str) -> LoadedModel:
    settings = ServerSettings(model_repository=repository, device="cpu", threads=1)
    return load_model(ModelSource(name, "1", repository / name / "1" / "model.onnx"), settings)


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory) -> LoadedModel:
    repository = tmp_path_factory.mktemp("repository")
    module = SmallCNN(seed=3)
    with torch.no_grad():
        module.features[0].bias.fill_(0.1)  # a constant bias: kept as it is, drawing nothing
    write_model(repository, "cnn", export(module, (1, *IMAGE_SHAPE)))
    return load(repository, "cnn")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(11).normal(size=IMAGE_SHAPE).astype(np.float32)


def occlusion(score, image: np.ndarray) -> np.ndarray:
    """(T, H, W): drop of each target's score when one pixel (all channels) is zeroed."""
    _, height, width = image.shape
    batch = np.repeat(image[None], height * width, axis=0)
    pixels = np.arange(height * width)
    batch[pixels, :, pixels // width, pixels % width] = 0
    drops = score(image[None]) - score(batch)
    return drops.T.reshape(len(TARGETS), height, width)


def occlusion_of(model: LoadedModel, image: np.ndarray) -> np.ndarray:
    return occlusion(lambda batch: model.session.run(batch)[:, TARGETS], image)


def reference_cascade(model_file: Path, image: np.ndarray, groups: list[list[list[str]]], seed: int) -> np.ndarray:
    """(S, T) correlations of a cascade rebuilt from the definition: each group's tensors redrawn in turn from
    N(mean, std) of the original tensor (a constant one left as it is), maps by ONNX Runtime, scipy's Spearman."""
    graph = onnx.load(str(model_file))
    tensors = {tensor.name: tensor for tensor in graph.graph.initializer}
    rng = np.random.default_rng(seed)

    def maps_of(graph: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        return occlusion(lambda batch: session.run(None, {"input": batch})[0][:, TARGETS], image)

    original = maps_of(graph)
    rows = []
    for group in groups:
        for name in (name for layer in group for name in layer):
            values = numpy_helper.to_array(tensors[name])
            if values.std() > 0:
                drawn = rng.normal(values.astype(np.float64).mean(), values.astype(np.float64).std(), values.shape)
                tensors[name].CopyFrom(numpy_helper.from_array(drawn.astype(values.dtype), name))
        randomized = maps_of(graph)
        rows.append(
            [
                scipy.stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic
                for a, b in zip(original, randomized, strict=True)
            ]
        )
    return np.array(rows)


def test_cascade_matches_an_independent_rebuild(small_cnn, image, tmp_path) -> None:
    maps = occlusion_of(small_cnn, image)
    result = parameter_randomization(
        small_cnn,
        plan_cascade(small_cnn, None),
        maps,
        lambda model: occlusion_of(model, image),
        seed=42,
        workdir=tmp_path,
    )
    assert result.layers == LAYER_NAMES
    expected = reference_cascade(small_cnn.source.path, image, [[layer] for layer in LAYER_TENSORS], seed=42)
    assert result.correlations.shape == (3, len(TARGETS))
    np.testing.assert_allclose(result.correlations, expected, atol=1e-3)
    assert result.correlations[-1].max() < 0.9  # the reference is not trivially 1


def test_fewer_steps_group_neighbouring_layers(small_cnn, image, tmp_path) -> None:
    maps = occlusion_of(small_cnn, image)

    def explain(model: LoadedModel) -> np.ndarray:
        return occlusion_of(model, image)

    grouped = parameter_randomization(small_cnn, plan_cascade(small_cnn, 2), maps, explain, seed=7, workdir=tmp_path)
    assert grouped.layers == LAYER_NAMES[1:]
    expected = reference_cascade(small_cnn.source.path, image, [LAYER_TENSORS[:2], LAYER_TENSORS[2:]], seed=7)
    np.testing.assert_allclose(grouped.correlations, expected, atol=1e-3)
    # Every layer drawn once, in the same order: the last step is the same model whatever the grouping.
    single = parameter_randomization(small_cnn, plan_cascade(small_cnn, None), maps, explain, seed=7, workdir=tmp_path)
    np.testing.assert_array_equal(grouped.correlations[-1], single.correlations[-1])


def test_a_method_blind_to_the_model_stays_perfectly_correlated(small_cnn, image, tmp_path) -> None:
    def edges(model: LoadedModel) -> np.ndarray:
        spatial = np.abs(np.diff(image, axis=2, append=0)).sum(axis=0)
        return np.repeat(spatial[None], len(TARGETS), axis=0)

    result = parameter_randomization(
        small_cnn, plan_cascade(small_cnn, None), edges(small_cnn), edges, seed=42, workdir=tmp_path
    )
    np.testing.assert_allclose(result.correlations, np.ones((3, len(TARGETS))), rtol=0, atol=1e-12)


def test_maps_of_different_shapes_are_correlated_row_by_row(small_cnn, image, tmp_path) -> None:
    def maps(model: LoadedModel) -> list[np.ndarray]:
        drops = occlusion_of(model, image)
        return [drops[0], drops[1, 2:, 3:], np.abs(image)]  # the last ignores the model

    expected = reference_cascade(small_cnn.source.path, image, [[layer] for layer in LAYER_TENSORS], seed=42)
    result = parameter_randomization(
        small_cnn, plan_cascade(small_cnn, None), maps(small_cnn), maps, seed=42, workdir=tmp_path
    )
    assert result.correlations.shape == (3, 3)
    np.testing.assert_allclose(result.correlations[:, 0], expected[:, 0], atol=1e-3)
    np.testing.assert_allclose(result.correlations[:, 2], 1.0, rtol=0, atol=1e-12)


def test_each_step_serves_its_own_file_and_removes_it(small_cnn, image, tmp_path) -> None:
    original = small_cnn.source.path.read_bytes()
    seen = []

    def explain(model: LoadedModel) -> np.ndarray:
        assert model.source.path.parent == tmp_path and model.source.path.exists()
        assert model.name == small_cnn.name and model.signature == small_cnn.signature
        seen.append(onnx.load(str(model.source.path)))
        return occlusion_of(model, image)

    parameter_randomization(
        small_cnn, plan_cascade(small_cnn, None), occlusion_of(small_cnn, image), explain, seed=1, workdir=tmp_path
    )
    assert list(tmp_path.iterdir()) == []
    assert small_cnn.source.path.read_bytes() == original
    weights = [{t.name: numpy_helper.to_array(t) for t in graph.graph.initializer} for graph in seen]
    before = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(small_cnn.source.path)).graph.initializer}
    for step, layer in enumerate(LAYER_TENSORS):  # step s redraws layer s; layers below it are still the original
        assert not np.array_equal(weights[step][layer[0]], before[layer[0]])
        for later in LAYER_TENSORS[step + 1 :]:
            assert np.array_equal(weights[step][later[0]], before[later[0]])
    assert np.array_equal(weights[-1]["features.0.bias"], before["features.0.bias"])  # constant, kept


def test_a_model_without_weights_cannot_be_checked(tmp_path) -> None:
    write_model(tmp_path / "repository", "rows", identity_classifier())
    model = load(tmp_path / "repository", "rows")
    with pytest.raises(FailedPrecondition, match="no layer with learned weights"):
        plan_cascade(model, None)


def test_rank_correlation_equals_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = np.round(rng.normal(size=(4, 9, 7)), 1)  # many ties, and |a| ties a value with its negative
        b = np.round(a + rng.normal(scale=rng.uniform(0.1, 3), size=a.shape), 1)
        expected = scipy.stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic
        assert rank_correlation(a, b) == pytest.approx(expected, abs=1e-12)
        values = np.abs(a).ravel()
        np.testing.assert_array_equal(average_ranks(values), scipy.stats.rankdata(values))
    assert rank_correlation(a, -a) == pytest.approx(1.0)


def test_rank_correlation_of_a_constant_map_is_nan() -> None:
    assert np.isnan(rank_correlation(np.full((5, 5), 2.0), np.arange(25.0)))
    assert np.isnan(rank_correlation(np.arange(25.0), np.zeros(25)))
    assert np.isnan(rank_correlation(np.array([3.0]), np.array([1.0])))


def test_cascade_groups() -> None:
    layers = [WeightedLayer(f"L{i}", "Conv", (f"w{i}",)) for i in range(7)]
    sizes = [[layer.name for layer in group] for group in cascade_groups(layers, 3)]
    assert sizes == [["L0", "L1", "L2"], ["L3", "L4"], ["L5", "L6"]]
    assert cascade_groups(layers, None) == [[layer] for layer in layers]
    assert cascade_groups(layers, 50) == [[layer] for layer in layers]
    with pytest.raises(InvalidInput, match="steps"):
        cascade_groups(layers, 0)


def method_maps(name: str, image: np.ndarray) -> Callable[[LoadedModel], np.ndarray]:
    method = get_method(name)

    def explain(model: LoadedModel) -> np.ndarray:
        scores = model.session.run(image[None])[0]
        target = int(np.argmax(scores))
        scorer = Scorer(model, [target], "raw", CancelToken())
        job = ExplainJob(model=model, image=image, scores=scores, scorer=scorer, batch_size=8)
        return method.attribute(job, parse_parameters(method.parameters, {}, name)).maps

    return explain


def test_randomised_gradients_come_from_the_randomised_weights(small_cnn, image, tmp_path) -> None:
    """Each step's backward graph is derived from that step's file: its gradient is torch autograd's on SmallCNN
    holding that file's weights."""
    gradient = method_maps("gradient", image)
    checked = []

    def explain(model: LoadedModel) -> np.ndarray:
        maps = gradient(model)
        weights = onnx.load(str(model.source.path)).graph.initializer
        module = SmallCNN().eval()
        module.load_state_dict({tensor.name: torch.tensor(numpy_helper.to_array(tensor)) for tensor in weights})
        inputs = torch.from_numpy(image)[None].requires_grad_()
        scores = module(inputs)[0]
        (expected,) = torch.autograd.grad(scores[scores.argmax()], inputs)
        np.testing.assert_allclose(maps, expected.numpy(), rtol=0, atol=1e-5 * float(expected.abs().max()))
        checked.append(model.source.path)
        return maps

    parameter_randomization(
        small_cnn, plan_cascade(small_cnn, None), gradient(small_cnn), explain, seed=42, workdir=tmp_path
    )
    assert len(checked) == 3


# The trained demo digits model and a clean digit: Adebayo et al.'s finding, reproduced. After every layer is
# randomised the input gradient no longer resembles the original (measured: 0.01-0.08 over 3 seeds and 3 digits),
# guided backprop stays more alike (0.30-0.44), and gradient x input stays with the input (0.97-0.98: the black
# background is zero whatever the weights).
@pytest.fixture(scope="module")
def digits() -> LoadedModel:
    return load(REPOSITORY, "digits")


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    picture = cv2.imread(str(SAMPLES / "digit_3_clean.png"), cv2.IMREAD_GRAYSCALE)
    return (cv2.resize(picture, (28, 28), interpolation=cv2.INTER_AREA).astype(np.float32) / 255)[None]


def final_correlation(model: LoadedModel, image: np.ndarray, name: str, workdir: Path) -> float:
    explain = method_maps(name, image)
    result = parameter_randomization(
        model, plan_cascade(model, None), explain(model), explain, seed=42, workdir=workdir
    )
    assert result.layers == ["/13/Gemm", "/8/Conv", "/4/Conv", "/0/Conv"]
    return float(result.correlations[-1, 0])


def test_gradient_depends_on_the_weights_and_gradient_x_input_on_the_input(digits, digit, tmp_path) -> None:
    gradient = final_correlation(digits, digit, "gradient", tmp_path)
    guided = final_correlation(digits, digit, "guided_backprop", tmp_path)
    times_input = final_correlation(digits, digit, "gradient_x_input", tmp_path)
    assert gradient < 0.3
    assert guided > gradient
    assert times_input > 0.9
