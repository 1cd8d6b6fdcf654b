"""Resolve requested targets (class index, label, top-k) into class indices against one image's scores."""

from __future__ import annotations

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.handlers.schema import TargetQuery


def resolve_targets(queries: list[TargetQuery], scores: np.ndarray, labels: tuple[str, ...], limit: int) -> list[int]:
    """Class indices in request order, duplicates removed; no query means the top-1 prediction."""
    num_classes = len(scores)
    ranked = np.argsort(-scores, kind="stable")
    resolved: list[int] = []
    for query in queries or [TargetQuery(top_k=1)]:
        resolved.extend(_resolve(query, ranked, labels, num_classes))
    unique = list(dict.fromkeys(resolved))
    if len(unique) > limit:
        raise InvalidInput(f"{len(unique)} targets requested; the limit is {limit}")
    return unique


def _resolve(query: TargetQuery, ranked: np.ndarray, labels: tuple[str, ...], num_classes: int) -> list[int]:
    if query.class_index is not None:
        if not 0 <= query.class_index < num_classes:
            raise InvalidInput(
                f"target class {query.class_index} is out of range: "
                f"the model has {num_classes} classes (0..{num_classes - 1})"
            )
        return [query.class_index]
    if query.label is not None:
        if query.label not in labels:
            hint = (
                f"labels: {', '.join(labels[:20])}{' ...' if len(labels) > 20 else ''}"
                if labels
                else "the model has no labels"
            )
            raise InvalidInput(f"unknown target label {query.label!r}; {hint}")
        return [labels.index(query.label)]
    if query.top_k is not None:
        if not 1 <= query.top_k <= num_classes:
            raise InvalidInput(f"target top_k must be between 1 and {num_classes}, got {query.top_k}")
        return [int(i) for i in ranked[: query.top_k]]
    raise InvalidInput("a target has none of class_index, label or top_k set")
