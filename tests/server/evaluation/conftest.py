"""A small CNN and score functions over it, in the shape the metrics take: (n, *image shape) -> (n, T)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from support.models import SmallCNN

ScoreFn = Callable[[np.ndarray], np.ndarray]


@pytest.fixture(scope="session")
def cnn() -> SmallCNN:
    return SmallCNN(channels=3, classes=5, seed=4).eval()


def _torch_scores(module: torch.nn.Module, targets: list[int], layout: str = "NCHW", batch_size: int = 0) -> ScoreFn:
    """Scores of `targets` from a torch model that takes NCHW; NHWC inputs are transposed first. With `batch_size`,
    it fails when a metric asks for more rows at once."""

    def score(inputs: np.ndarray) -> np.ndarray:
        assert not batch_size or len(inputs) <= batch_size, f"{len(inputs)} rows in one call, limit {batch_size}"
        tensor = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        with torch.no_grad():
            outputs = module(tensor.permute(0, 3, 1, 2) if layout == "NHWC" else tensor)
        return outputs[:, targets].numpy()

    return score


@pytest.fixture(scope="session")
def torch_scores() -> Callable[..., ScoreFn]:
    return _torch_scores
