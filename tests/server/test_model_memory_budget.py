"""A model's own derived-graph budget (config.yaml's memory_budget_mb, #17): within the server's --memory-budget, a
model whose graphs cannot fit its own budget has those methods refused with RESOURCE_EXHAUSTED naming the key, before
the work, while its predictions, its perturbation methods and the other models are served as before."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from support.inprocess import serving_in_process
from support.models import export, write_model
from support.zoo import TORCHVISION

from onnxplain.client import Client, OnnxplainError

SHAPE = (3, 48, 48)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("budgets")
    model = export(TORCHVISION["squeezenet1_1"].module(), (1, *SHAPE))  # 4.7 MB of weights
    # Below any derived graph of this model: each reads the weights.
    write_model(repository, "tight", model, {"memory_budget_mb": 1})
    write_model(repository, "free", model)
    return repository


def test_a_graph_beyond_the_models_own_budget_is_refused_naming_the_key(repository: Path) -> None:
    image = np.random.default_rng(0).standard_normal(SHAPE, np.float32)
    with serving_in_process(repository) as server, Client(server.target, timeout=120) as client:
        assert server.registry.get("tight").derived.limit == 1024 * 1024
        assert server.registry.get("free").derived.limit is None
        with pytest.raises(OnnxplainError) as refused:
            client.explain("tight", image, method="integrated_gradients", target=1, steps=4)
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "memory_budget_mb (config.yaml)" in refused.value.message
        assert np.isfinite(client.predict("tight", image).scores).all()
        assert np.isfinite(client.explain("tight", image, method="occlusion", target=1).attribution).all()
        assert np.isfinite(
            client.explain("free", image, method="integrated_gradients", target=1, steps=4).attribution
        ).all()
