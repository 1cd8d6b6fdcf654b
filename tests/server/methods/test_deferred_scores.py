"""Single-pass methods asked for named classes take the image's scores from their own backward run instead of a
scoring forward before it: one pass fewer, and the same maps, scores and target scores as the path that scores
first (top_k targets). Where the graph's scores are not the model's output (probability space on a logits model),
the scores come from a forward after the method."""

from __future__ import annotations

import numpy as np
import pytest
from support.models import SmallCNN, export, write_model

from onnxplain.server.demo import REPOSITORY
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


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[ModelRegistry, ServerSettings]:
    repository = tmp_path_factory.mktemp("repository")
    write_model(repository, "cnn", export(SmallCNN(seed=21), (1, *SHAPE)))
    settings = ServerSettings(model_repository=repository, device="cpu")
    registry = ModelRegistry(repository, lambda source: load_model(source, settings))
    registry.load("cnn")
    return registry, settings


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


@pytest.mark.parametrize("method", SINGLE_PASS)
def test_named_classes_skip_the_scoring_forward_and_give_the_same_answer(served, method) -> None:
    classes = ranked_classes(served, 2)
    scored_first = run(served, method, [TargetQuery(top_k=2)])
    deferred = run(served, method, [TargetQuery(class_index=c) for c in classes])
    # One backward row per target (two graphs' rows for guided Grad-CAM), and the scoring forward only when first.
    assert scored_first.cost.backward_passes == deferred.cost.backward_passes in (2, 4)
    assert scored_first.cost.forward_passes == deferred.cost.backward_passes + 1
    assert deferred.cost.forward_passes == deferred.cost.backward_passes
    before, after = scored_first.explanations[0], deferred.explanations[0]
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5, atol=1e-5)
    for expected, got in zip(before.attributions, after.attributions, strict=True):
        assert got.class_index == expected.class_index
        assert got.score == pytest.approx(expected.score, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(got.attribution, expected.attribution, rtol=1e-5, atol=1e-6)


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
    (top,) = ranked_classes(served, 1)
    raw = run(served, "saliency", [TargetQuery(top_k=1)], score_space="probability")
    deferred = run(served, "saliency", [TargetQuery(class_index=top)], score_space="probability")
    assert deferred.cost.forward_passes == raw.cost.forward_passes == 2
    np.testing.assert_allclose(deferred.explanations[0].scores, raw.explanations[0].scores, rtol=1e-6)
    assert deferred.explanations[0].attributions[0].score == pytest.approx(raw.explanations[0].attributions[0].score)


def test_a_class_out_of_range_is_refused_before_any_pass(served) -> None:
    with pytest.raises(InvalidInput, match="out of range"):
        run(served, "saliency", [TargetQuery(class_index=10_000)])
