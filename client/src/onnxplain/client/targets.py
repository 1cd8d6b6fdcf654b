"""Which outputs to explain: class indices, label names or the top-k predictions, as wire Targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from onnxplain.client.errors import InvalidArgumentError
from onnxplain.v1 import explain_service_pb2 as pb


@dataclass(frozen=True)
class TopK:
    """The k highest-scoring classes of each image; the server expands it to k targets."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise InvalidArgumentError(f"TopK needs a positive integer, got {self.k!r}")


TargetLike: TypeAlias = int | str | TopK
"""A class index, a label name, or TopK(k)."""

TargetsLike: TypeAlias = TargetLike | Sequence[TargetLike] | None
"""None explains the top-1 prediction; a single target gives (H, W) maps, a list or TopK gives (T, H, W)."""


def to_targets(target: TargetsLike) -> list[pb.Target]:
    if target is None:
        return []
    if isinstance(target, (list, tuple)):
        return [_to_target(item) for item in target]
    return [_to_target(target)]


def keeps_target_axis(target: TargetsLike) -> bool:
    """Like numpy indexing: a scalar target drops the target axis, a list (even of one) or TopK keeps it."""
    return isinstance(target, (list, tuple, TopK))


def _to_target(target: object) -> pb.Target:
    if isinstance(target, TopK):
        return pb.Target(top_k=int(target.k))
    if isinstance(target, (int, np.integer)) and not isinstance(target, (bool, np.bool_)):
        return pb.Target(class_index=int(target))
    if isinstance(target, str):
        return pb.Target(label=target)
    raise InvalidArgumentError(
        f"cannot use a {type(target).__name__} as a target: use a class index (int), a label (str) or TopK(k)"
    )
