"""Resolve requested targets (class index, label, top-k) into class indices against one image's scores."""

from __future__ import annotations

import numpy as np

from onnxplain.server.errors import InvalidInput
from onnxplain.server.handlers.schema import TargetQuery
from onnxplain.server.observability.names import shortened


def resolve_targets(
    queries: list[TargetQuery], scores: np.ndarray | None, labels: tuple[str, ...], limit: int, num_classes: int = 0
) -> list[int]:
    """Class indices in request order, duplicates removed; no query means the top-1 prediction. Without the image's
    scores (`needs_scores` said none was needed) the classes are counted by `num_classes`."""
    if scores is not None:
        num_classes = len(scores)
    ranked = np.argsort(-scores, kind="stable") if scores is not None else None
    resolved: list[int] = []
    for query in queries or [TargetQuery(top_k=1)]:
        resolved.extend(_resolve(query, ranked, labels, num_classes))
    unique = list(dict.fromkeys(resolved))
    _check_count(len(unique), limit)
    return unique


def needs_scores(queries: list[TargetQuery]) -> bool:
    """Whether resolving these queries ranks the image's classes (top_k, or no query: the top-1 prediction)."""
    return not queries or any(query.top_k is not None for query in queries)


def top_ranked_count(queries: list[TargetQuery], limit: int, num_classes: int) -> int | None:
    """k when the queries ask for the top k classes and nothing else (no query: k = 1), checked as resolve_targets
    checks them, so a method that ranks the classes in its own run can take them from there; None otherwise."""
    if any(query.top_k is None for query in queries):
        return None
    counts = [query.top_k for query in queries] or [1]
    for count in counts:
        _check_top_k(count, num_classes)
    _check_count(max(counts), limit)
    return max(counts)


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise InvalidInput(f"{count} targets requested; the limit is {limit}")


def _check_top_k(top_k: int, num_classes: int) -> None:
    if not 1 <= top_k <= num_classes:
        raise InvalidInput(f"target top_k must be between 1 and {num_classes}, got {top_k}")


def _resolve(query: TargetQuery, ranked: np.ndarray | None, labels: tuple[str, ...], num_classes: int) -> list[int]:
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
                f"labels: {', '.join(shortened(label) for label in labels[:20])}{' ...' if len(labels) > 20 else ''}"
                if labels
                else "the model has no labels"
            )
            raise InvalidInput(f"unknown target label {shortened(query.label)!r}; {hint}")
        return [labels.index(query.label)]
    if query.top_k is not None:
        _check_top_k(query.top_k, num_classes)
        assert ranked is not None, "top_k needs the image's scores (needs_scores)"
        return [int(i) for i in ranked[: query.top_k]]
    raise InvalidInput("a target has none of class_index, label or top_k set")
