"""LRP's numeric parameters are inputs of one backward graph, not keys of many: requests that vary epsilon, gamma or
alpha-beta, and a raw-tensor model's z-box bounds (each image's own range), each get Zennit's map for their values
while the model's derived cache builds one graph per composite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.models import SmallCNN, export, write_model
from support.vjp import assert_relative_close
from support.zoo import zennit

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.schema import ExplainQuery, ImageInput, TargetQuery
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

zcomposites, zrules, ztypes = (zennit(name) for name in ("composites", "rules", "types"))

SHAPE = (3, 12, 10)
TARGET = 2


def _module() -> SmallCNN:
    return SmallCNN(seed=5).eval()


@pytest.fixture
def served(tmp_path: Path) -> ModelRegistry:
    """A raw-tensor model: no preprocessing config, so z-box bounds come from each image's range."""
    write_model(tmp_path, "cnn", export(_module(), (1, *SHAPE)))
    settings = ServerSettings(model_repository=tmp_path, device="cpu")
    registry = ModelRegistry(tmp_path, lambda source: load_model(source, settings))
    registry.load("cnn")
    registry.settings = settings
    return registry


def _explain(registry: ModelRegistry, image: np.ndarray, parameters: dict) -> np.ndarray:
    query = ExplainQuery("cnn", "", [ImageInput(tensor=image)], "lrp", parameters, [TargetQuery(class_index=TARGET)])
    (target,) = explain(registry, query, registry.settings, CancelToken()).explanations[0].attributions
    return target.attribution


def _zennit_map(composite, image: np.ndarray) -> np.ndarray:
    """The method's map from Zennit: relevance seeded with the target's one-hot, times its score, summed over
    channels."""
    module = _module()
    inputs = torch.tensor(image[None], requires_grad=True)
    seed = torch.zeros(1, 5)
    seed[0, TARGET] = 1.0
    with composite.context(module) as modified:
        scores = modified(inputs)
        (relevance,) = torch.autograd.grad(scores, inputs, seed)
    return (relevance[0] * scores[0, TARGET]).sum(0).detach().numpy()


def _bounds(image: np.ndarray) -> dict[str, torch.Tensor]:
    return {"low": torch.tensor(float(image.min())), "high": torch.tensor(float(image.max()))}


def _image(scale: float, seed: int) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(SHAPE)).astype(np.float32)


# composite -> the parameters of two requests, and the Zennit composite for one request's parameters and image.
CASES = {
    "epsilon_plus": (
        [{"epsilon": 1e-6}, {"epsilon": 0.5}],
        lambda p, image: zcomposites.EpsilonPlus(epsilon=p["epsilon"]),
    ),
    "epsilon_gamma_box": (
        [{"gamma": 0.25, "epsilon": 1e-6}, {"gamma": 1.5, "epsilon": 0.1}],
        lambda p, image: zcomposites.EpsilonGammaBox(**_bounds(image), epsilon=p["epsilon"], gamma=p["gamma"]),
    ),
    "alpha_beta": (
        [{"alpha": 2.0, "beta": 1.0}, {"alpha": 4.0, "beta": 3.0}],
        lambda p, image: zcomposites.LayerMapComposite(
            [*zcomposites.layer_map_base(), (ztypes.Linear, zrules.AlphaBeta(p["alpha"], p["beta"]))]
        ),
    ),
}


@pytest.mark.parametrize("composite", list(CASES))
def test_parameter_values_share_one_backward_graph(served: ModelRegistry, composite: str) -> None:
    requests, zennit_composite = CASES[composite]
    image = _image(1.0, 0)
    maps = []
    for parameters in requests:
        ours = _explain(served, image, {"composite": composite, **parameters})
        assert_relative_close(ours, _zennit_map(zennit_composite(parameters, image), image))
        maps.append(ours)
    assert not np.allclose(maps[0], maps[1])  # the values fed made a difference
    assert served.get("cnn").derived.builds == 1


def test_a_raw_tensor_model_explains_images_of_other_ranges_with_one_graph(served: ModelRegistry) -> None:
    """deep_taylor's z-box bounds are each image's range for a model without preprocessing: fed, not built in."""
    for scale, seed in ((1.0, 1), (3.0, 2), (0.2, 3)):
        image = _image(scale, seed)
        ours = _explain(served, image, {"composite": "deep_taylor"})
        reference = zcomposites.SpecialFirstLayerMapComposite(
            [*zcomposites.layer_map_base(), (ztypes.Linear, zrules.ZPlus())],
            [(ztypes.Linear, zrules.ZBox(**_bounds(image)))],
        )
        assert_relative_close(ours, _zennit_map(reference, image))
    model = served.get("cnn")
    assert model.derived.builds == 1
    assert model.derived.cached_count() == 1
