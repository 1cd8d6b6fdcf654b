"""Plain forward passes for whole requests: images of one shape go through the model in one batch."""

from __future__ import annotations

import numpy as np

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.methods.base import PassCounter
from onnxplain.server.repository.model import LoadedModel


def score_images(
    model: LoadedModel, tensors: list[np.ndarray], token: CancelToken | None = None, passes: PassCounter | None = None
) -> list[np.ndarray]:
    """Raw (K,) scores per tensor. Tensors of equal shape share a batch (raw tensors of a dynamic model may differ);
    the passes are added to `passes` when given."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault(tensor.shape, []).append(index)
    scores: list[np.ndarray | None] = [None] * len(tensors)
    for indices in groups.values():
        batch_scores = model.session.run(np.stack([tensors[i] for i in indices]), token)
        if passes is not None:
            passes.record_forward(model.session, len(indices))
        for index, row in zip(indices, batch_scores, strict=True):
            scores[index] = row
    return scores
