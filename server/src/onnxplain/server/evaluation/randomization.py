"""Model-parameter randomisation sanity check (Adebayo et al., NeurIPS 2018; Quantus MPRT, top-down cascade).

An explanation that explains the model must change when the model's weights are destroyed. The check randomises the
learned layers from the output down, cumulatively, recomputes the maps on each randomised model, and reports the
Spearman rank correlation of |map| with the original's: a correlation that stays high means the method shows the
image (edges, the input itself) rather than what the model learned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from onnxplain.server.engine.derived import DerivedGraphs
from onnxplain.server.engine.randomize import WeightedLayer, randomize_layers, weighted_layers
from onnxplain.server.engine.session import ModelSession
from onnxplain.server.errors import FailedPrecondition, InvalidInput
from onnxplain.server.repository.model import LoadedModel

# Protobuf cannot serialise a message of 2 GiB or more: larger randomised graphs keep their weights beside the file.
_EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass(frozen=True)
class RandomizationResult:
    """Per cascade step: `layers[s]` is the deepest layer randomised so far; `correlations[s, t]` is the Spearman
    rank correlation of map t's |map| (a target of an image) on the model after step s with its |map| on the original
    model."""

    layers: list[str]
    correlations: np.ndarray


@dataclass(frozen=True)
class Cascade:
    """The model's graph with its weights, and its weighted layers (top-down) cut into the cascade's steps: known
    before any map is computed, so that the number of steps can be counted into a request's cost."""

    graph: onnx.ModelProto
    groups: list[list[WeightedLayer]]


def plan_cascade(model: LoadedModel, steps: int | None) -> Cascade:
    """The model's graph and its layers cut into `steps` cumulative steps (None: one layer per step, as Quantus
    does; fewer steps group neighbouring layers, for deep models where each step costs one explanation per image).
    A model without learned layers cannot be checked."""
    graph = model.derived.weights.model()  # as loaded (nodes sorted, weights as read then), not the file again
    layers = weighted_layers(graph)
    if not layers:
        raise FailedPrecondition(
            f"model {model.name!r} has no layer with learned weights (Conv, ConvTranspose, Gemm or MatMul with a "
            "weight stored in the graph) to randomise"
        )
    return Cascade(graph, cascade_groups(layers, steps))


def parameter_randomization(
    model: LoadedModel,
    cascade: Cascade,
    maps: Sequence[np.ndarray],
    explain: Callable[[LoadedModel], Sequence[np.ndarray]],
    *,
    seed: int,
    workdir: Path,
) -> RandomizationResult:
    """Randomise the model's layers top-down, one cascade step at a time and cumulatively, and correlate
    `explain(randomised model)` with `maps`, the maps of the same images, targets and method on `model`: one map per
    row (a (T, ...) array, or a list of maps of different shapes), row t of each step correlated with row t of `maps`.
    `cascade` is plan_cascade's for `model`; `workdir` is the caller's folder for each step's graph file, removed
    once that step's maps are done. The weights are redrawn once per layer from one generator seeded with `seed`, so
    a seed fixes the cascade."""
    rng = np.random.default_rng(seed)
    names, correlations = [], []
    randomized = cascade.graph
    for index, group in enumerate(cascade.groups):
        randomized = randomize_layers(randomized, group, rng)
        path = workdir / f"randomized_{index}.onnx"
        written = _save(randomized, path)
        try:
            # Kept on disk until the maps are done: derived graphs (gradient methods' backward graphs) read it.
            step_maps = explain(randomized_copy(model, path))
        finally:
            for file in written:
                file.unlink(missing_ok=True)
        names.append(group[-1].name)
        correlations.append([rank_correlation(a, b) for a, b in zip(maps, step_maps, strict=True)])
    return RandomizationResult(names, np.asarray(correlations, dtype=np.float64))


def cascade_groups(layers: Sequence[WeightedLayer], steps: int | None) -> list[list[WeightedLayer]]:
    """The layers (top-down) cut into `steps` consecutive groups of near-equal size, the larger ones first; one
    layer per group when `steps` is None or at least the number of layers."""
    if steps is not None and steps < 1:
        raise InvalidInput(f"steps must be at least 1, got {steps}")
    count = len(layers) if steps is None else min(steps, len(layers))
    size, extra = divmod(len(layers), count)
    groups, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        groups.append(list(layers[start:end]))
        start = end
    return groups


def randomized_copy(model: LoadedModel, path: Path) -> LoadedModel:
    """`model` served from the graph at `path`, which must have the same structure (only weights changed): config,
    signature, labels and gradient support carry over; sessions are created for the new file, under the same
    providers, threads and fixed batch."""
    session = model.session
    derived = model.derived
    return replace(
        model,
        source=replace(model.source, path=path),
        session=ModelSession(
            path,
            providers=derived.providers,
            threads=derived.threads,
            input_name=session.input_name,
            output_name=session.output_name,
            fixed_batch=session.fixed_batch,
            scheduler=session.scheduler,
        ),
        derived=DerivedGraphs(path, providers=derived.providers, threads=derived.threads, scheduler=session.scheduler),
    )


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of |a| and |b| flattened (Quantus MPRT's abs=True; its normalisation does not change
    ranks), ties given their average rank as scipy.stats.spearmanr does; nan when either is constant."""
    x = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    y = np.abs(np.asarray(b, dtype=np.float64)).ravel()
    if x.size != y.size:
        raise ValueError(f"maps of {x.size} and {y.size} elements cannot be correlated")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    rx = average_ranks(x) - (x.size + 1) / 2
    ry = average_ranks(y) - (y.size + 1) / 2
    return float(np.dot(rx, ry) / np.sqrt(np.dot(rx, rx) * np.dot(ry, ry)))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], values.size)
    group_rank = (starts + ends + 1) / 2  # mean of the ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = group_rank[np.cumsum(starts_group) - 1]
    return ranks


def _save(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Write the graph (its weights beside it when protobuf could not hold them) and return the files written."""
    if model.ByteSize() < _EXTERNAL_DATA_BYTES:
        onnx.save(model, str(path))
        return [path]
    weights = path.with_name(path.name + ".data")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # saving with external data empties the tensors of the proto it is given
    onnx.save(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=weights.name)
    return [path, weights]
