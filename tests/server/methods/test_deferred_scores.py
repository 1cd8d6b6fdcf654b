"""Single-pass methods take the image's scores from their own backward run instead of a scoring forward before it,
and rank its classes there for top-k targets (or none: the top class): one pass fewer, and the same targets, maps,
scores and target scores as the path that scores first (a request mixing top_k with a named class). Where the
graph's scores are not the model's output (probability space on a logits model), the scores come from a forward
after the method."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from support.models import SmallCNN, export, identity_classifier, write_model

from onnxplain.server.demo import REPOSITORY
from onnxplain.server.engine import gradients
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.errors import InvalidInput
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.schema import ExplainQuery, ExplainResult, ImageInput, TargetQuery
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

SHAPE = (3, 16, 14)
SINGLE_PASS = (
    "saliency",
    "gradient",
    "gradient_x_input",
    "positive_saliency",
    "guided_backprop",
    "deconvnet",
    "cam",
    "grad_cam",
    "grad_cam_pp",
    "guided_grad_cam",
    "lrp",
)


def serve(repository: Path, name: str, model: bytes) -> tuple[ModelRegistry, ServerSettings]:
    write_model(repository, name, model)
    settings = ServerSettings(model_repository=repository, device="cpu")
    registry = ModelRegistry(repository, lambda source: load_model(source, settings))
    registry.load(name)
    return registry, settings


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[ModelRegistry, ServerSettings]:
    return serve(tmp_path_factory.mktemp("repository"), "cnn", export(SmallCNN(seed=21), (1, *SHAPE)))


def run(served, method: str, targets: list[TargetQuery], score_space: str = "raw") -> ExplainResult:
    registry, settings = served
    image = np.random.default_rng(4).normal(size=SHAPE).astype(np.float32)
    query = ExplainQuery(
        model="cnn",
        version="",
        images=[ImageInput(tensor=image)],
        method=method,
        parameters={},
        targets=targets,
        score_space=score_space,
    )
    return explain(registry, query, settings, CancelToken())


def ranked_classes(served, count: int) -> list[int]:
    first = run(served, "saliency", [TargetQuery(top_k=count)])
    return [target.class_index for target in first.explanations[0].attributions]


def assert_same_answer(expected: ExplainResult, got: ExplainResult) -> None:
    before, after = expected.explanations[0], got.explanations[0]
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5, atol=1e-5)
    assert [t.class_index for t in after.attributions] == [t.class_index for t in before.attributions]
    for wanted, answer in zip(before.attributions, after.attributions, strict=True):
        assert answer.score == pytest.approx(wanted.score, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(answer.attribution, wanted.attribution, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", SINGLE_PASS)
def test_single_pass_methods_skip_the_scoring_forward_and_give_the_same_answer(served, method) -> None:
    first, second = ranked_classes(served, 2)
    # A named class beside top_k needs the ranking before the method: this request scores first.
    scored_first = run(served, method, [TargetQuery(top_k=2), TargetQuery(class_index=second)])
    named = run(served, method, [TargetQuery(class_index=c) for c in (first, second)])
    ranked = run(served, method, [TargetQuery(top_k=2)])
    # One backward row per target (two graphs' rows for guided Grad-CAM), and the scoring forward only when first.
    for deferred in (named, ranked):
        assert scored_first.cost.backward_passes == deferred.cost.backward_passes in (2, 4)
        assert scored_first.cost.forward_passes == deferred.cost.backward_passes + 1
        assert deferred.cost.forward_passes == deferred.cost.backward_passes
        assert_same_answer(scored_first, deferred)


def test_no_target_is_the_top_class_ranked_in_the_backward_run(served) -> None:
    (top,) = ranked_classes(served, 1)
    result = run(served, "grad_cam", [])
    assert [t.class_index for t in result.explanations[0].attributions] == [top]
    assert result.cost.forward_passes == result.cost.backward_passes == 1
    assert_same_answer(run(served, "grad_cam", [TargetQuery(class_index=top)]), result)


def test_tied_scores_rank_the_lower_class_first_as_the_scoring_path_does(tmp_path) -> None:
    """The graph's TopK and the host's stable sort must agree where scores tie (rows 1 and 3 of the image)."""
    registry, settings = serve(tmp_path, "rows", identity_classifier(classes=5, size=4))
    image = np.zeros((1, 5, 4), np.float32)
    image[0, [1, 3]] = 2.0
    image[0, 4] = 1.0

    def explain_rows(targets: list[TargetQuery]) -> ExplainResult:
        query = ExplainQuery("rows", "", [ImageInput(tensor=image)], "gradient", {}, targets)
        return explain(registry, query, settings, CancelToken())

    ranked = explain_rows([TargetQuery(top_k=3)])
    scored_first = explain_rows([TargetQuery(top_k=3), TargetQuery(class_index=4)])
    assert [t.class_index for t in ranked.explanations[0].attributions] == [1, 3, 4]
    assert ranked.cost.forward_passes == 3
    assert_same_answer(scored_first, ranked)
    # Each map is the gradient of its own class: 1/4 on that class's row and nothing elsewhere.
    for target in ranked.explanations[0].attributions:
        expected = np.zeros_like(image)
        expected[0, target.class_index] = 0.25
        np.testing.assert_allclose(target.attribution, expected[0], atol=1e-7)  # spatial: summed over channels


class SpatialHead(torch.nn.Module):
    """Scores shaped (N, K, 1, 1), as SqueezeNet's 1x1-convolution head leaves them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        layers = [torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 4, 1)]
        self.layers = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_scores_shaped_with_unit_axes_are_ranked_in_the_graph_too(tmp_path) -> None:
    registry, settings = serve(tmp_path, "spatial", export(SpatialHead(), (1, 3, 8, 8)))
    image = np.random.default_rng(8).normal(size=(3, 8, 8)).astype(np.float32)

    def saliency(targets: list[TargetQuery]) -> ExplainResult:
        query = ExplainQuery("spatial", "", [ImageInput(tensor=image)], "saliency", {}, targets)
        return explain(registry, query, settings, CancelToken())

    ranked = saliency([TargetQuery(top_k=2)])
    order = np.argsort(-ranked.explanations[0].scores.ravel(), kind="stable")[:2].tolist()
    assert [t.class_index for t in ranked.explanations[0].attributions] == order
    assert ranked.cost.forward_passes == 2
    assert_same_answer(saliency([TargetQuery(top_k=2), TargetQuery(class_index=order[1])]), ranked)


def test_the_demo_models_scores_match_its_predictions() -> None:
    settings = ServerSettings(model_repository=REPOSITORY, device="cpu")
    registry = ModelRegistry(REPOSITORY, lambda source: load_model(source, settings))
    registry.load("digits")
    image = np.random.default_rng(5).random((1, 28, 28)).astype(np.float32)
    query = ExplainQuery("digits", "", [ImageInput(tensor=image)], "saliency", {}, [TargetQuery(label="seven")])
    result = explain(registry, query, settings, CancelToken())
    (predicted,) = registry.get("digits").session.run(image[None])
    np.testing.assert_allclose(result.explanations[0].scores, predicted, rtol=1e-5, atol=1e-5)
    assert result.cost.forward_passes == 1


def test_probabilities_of_a_logits_model_are_scored_by_a_forward_after_the_method(served) -> None:
    first, second = ranked_classes(served, 2)
    scored_first = run(served, "saliency", [TargetQuery(top_k=1), TargetQuery(class_index=second)], "probability")
    for targets in ([TargetQuery(class_index=first), TargetQuery(class_index=second)], [TargetQuery(top_k=2)]):
        deferred = run(served, "saliency", targets, score_space="probability")
        assert deferred.cost.forward_passes == scored_first.cost.forward_passes == 3
        assert_same_answer(scored_first, deferred)


def test_a_class_out_of_range_is_refused_before_any_pass(served) -> None:
    with pytest.raises(InvalidInput, match="out of range"):
        run(served, "saliency", [TargetQuery(class_index=10_000)])


@pytest.mark.parametrize("method", ["saliency", "occlusion"])
def test_more_top_classes_than_the_target_limit_are_refused_ranked_or_scored_first(served, method) -> None:
    registry, settings = served
    limited = replace(settings, limits=replace(settings.limits, max_targets=2))
    image = np.zeros(SHAPE, np.float32)
    query = ExplainQuery("cnn", "", [ImageInput(tensor=image)], method, {}, [TargetQuery(top_k=3)])
    with pytest.raises(InvalidInput, match="3 targets requested; the limit is 2"):
        explain(registry, query, limited, CancelToken())


@pytest.mark.parametrize("top_k", [0, 6])
def test_a_top_k_out_of_range_is_refused_before_any_pass(served, top_k) -> None:
    with pytest.raises(InvalidInput, match="top_k must be between 1 and 5"):
        run(served, "saliency", [TargetQuery(top_k=top_k)])


def test_a_graph_that_cannot_rank_scores_first_and_gives_the_same_answer(served, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(gradients, "add_ranked_seed", lambda built, classes: False)
    unranked = run(serve(tmp_path, "cnn", export(SmallCNN(seed=21), (1, *SHAPE))), "saliency", [TargetQuery(top_k=2)])
    ranked = run(served, "saliency", [TargetQuery(top_k=2)])
    assert unranked.cost.forward_passes == 3
    assert ranked.cost.forward_passes == 2
    assert_same_answer(ranked, unranked)
