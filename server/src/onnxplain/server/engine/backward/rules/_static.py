"""Build-time facts the shape, reduce and normalization rules read from the forward graph: constant inputs (axes,
pads, indices, BatchNormalization statistics) and static sizes along given axes. A rule that needs one the graph
computes at run time raises, and the builder reports the node as unsupported instead of emitting a wrong graph."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from onnxplain.server.engine.backward.context import BackwardContext, UnknownShape


def constant(ctx: BackwardContext, name: str, what: str) -> np.ndarray:
    """The value of an initializer or Constant output; `what` names it in the error."""
    value = ctx.value(name)
    if value is None:
        raise NotImplementedError(f"{what} ({name!r}) is computed at run time; only constants are supported")
    return value


def constant_ints(ctx: BackwardContext, name: str, what: str) -> list[int]:
    return [int(v) for v in constant(ctx, name, what).reshape(-1)]


def static_dims(ctx: BackwardContext, name: str, axes: Iterable[int]) -> list[int]:
    """The sizes of `name` along `axes`, which must be known statically (other axes, e.g. the batch, may not be)."""
    shape = ctx.shape(name)
    if shape is None:
        raise UnknownShape(name, shape)
    dims = [shape[axis] for axis in axes]
    if any(d is None for d in dims):
        raise UnknownShape(name, shape)
    return [int(d) for d in dims]  # type: ignore[arg-type]


def normalized_axes(axes: Iterable[int], rank: int) -> list[int]:
    """Axes with negative values resolved, in increasing order."""
    return sorted(int(a) % rank for a in axes)
