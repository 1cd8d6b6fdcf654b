"""RISE adds its scored masks to the sums in folds (methods/rise.py, FOLD_BYTES); a fold after every batch gives the
maps of one fold at the end, within float32 rounding, for both normalisations and every class at once. The final maps
are divided in place of the sums, so partial maps taken while they grow (a stream) must leave them as they were."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from support.models import SmallCNN, export, write_model

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.schema import ExplainQuery, ImageInput, TargetQuery
from onnxplain.server.methods import rise
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

SHAPE = (3, 20, 18)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[ModelRegistry, ServerSettings]:
    repository = tmp_path_factory.mktemp("repository")
    write_model(repository, "cnn", export(SmallCNN(classes=7, seed=5), (1, *SHAPE)))
    # Batches of 8 masks: 300 masks make 38 folds when every batch folds.
    settings = ServerSettings(model_repository=repository, device="cpu", max_batch_size=8)
    registry = ModelRegistry(repository, lambda source: load_model(source, settings))
    registry.load("cnn")
    return registry, settings


def rise_maps(served, normalization: str, progress=None, partial_interval_s: float = 0.5) -> np.ndarray:
    registry, settings = served
    settings = replace(settings, partial_map_interval_s=partial_interval_s)
    image = np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)
    params = {"num_masks": 300, "grid_size": 4, "normalization": normalization}
    query = ExplainQuery("cnn", "", [ImageInput(tensor=image)], "rise", params, [TargetQuery(top_k=7)])
    result = explain(registry, query, settings, CancelToken(), progress)
    return np.stack([target.attribution for target in result.explanations[0].attributions])


@pytest.mark.parametrize("normalization", ["keep_prob", "mask_sum"])
def test_a_fold_per_batch_gives_the_maps_of_one_fold(served, normalization, monkeypatch) -> None:
    one_fold = rise_maps(served, normalization)
    monkeypatch.setattr(rise, "FOLD_BYTES", 1)
    many_folds = rise_maps(served, normalization)
    assert np.abs(one_fold).max() > 0
    np.testing.assert_allclose(many_folds, one_fold, rtol=1e-5, atol=1e-6 * np.abs(one_fold).max())


@pytest.mark.parametrize("normalization", ["keep_prob", "mask_sum"])
def test_partial_maps_leave_the_final_maps_unchanged(served, normalization, monkeypatch) -> None:
    """A partial map after every batch (and a fold after every batch, so the sums grow between them): the final maps
    are those of a call without a stream, and every partial map is normalised by the masks scored so far."""
    plain = rise_maps(served, normalization)
    monkeypatch.setattr(rise, "FOLD_BYTES", 1)
    partials = []
    streamed = rise_maps(served, normalization, partials.append, partial_interval_s=0.0)
    maps_seen = [event for event in partials if event.partial]
    assert len(maps_seen) > 10
    np.testing.assert_allclose(streamed, plain, rtol=1e-5, atol=1e-6 * np.abs(plain).max())
    # The last partial map, late in the run, is close to the final one: same normalisation, most masks scored.
    last = np.stack([target.attribution for target in maps_seen[-1].partial])
    assert np.abs(last - plain).max() < 0.1 * np.abs(plain).max()
