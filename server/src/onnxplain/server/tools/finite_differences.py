"""Does the backward graph the server built for a model compute the gradient? seedᵀ·J·v from one run of the plain
gradient's backward session against the central finite difference seedᵀ·(f(x+hv) - f(x-hv))/2h of the explained
tensor the same session computes, at an image x, a random seed over the classes and random unit directions v.

Float32 throughout: ONNX Runtime's CPU provider has no float64 convolution, so the forward cannot run in double.
Measured on a small CNN, MobileNetV3 and ResNet-50, that shapes the comparison:
- isotropic directions do not work: gᵀv is then about ‖g‖/√n, and on a 224x224 ResNet-50 no step resolves it
  (ReLU kinks and HardSwish curvature spoil large steps, float32 rounding small ones: 2-60% error at every step).
  The directions are therefore the gradient reweighted by random positive weights, so that gᵀv is about ‖g‖. The
  price: a gradient wrong only where the backward graph's is exactly zero goes unseen.
- no one step suits every model (the small CNN agrees best at h = 1e-4·‖x‖, ResNet-50 at 1e-6·‖x‖), so each
  direction is differenced at a ladder of steps, a decade apart, and the step where both sides agree best counts.
  A wrong gradient disagrees at every step.
Both sides are compared on the displacement x₊ - x₋ the float32 inputs really have, so rounding x ± hv costs
nothing. f(x ± hv) comes from the model's own session where that computes the explained tensor from float32 inputs
(a forward costs a third of a backward-graph run); otherwise from the backward graph with zero seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from onnxplain.server.engine.gradients import BackwardSession
from onnxplain.server.repository.model import LoadedModel

Explained = Callable[[np.ndarray], np.ndarray]

# The largest step relative to ‖x‖, and how many steps a decade apart are tried from it down.
LARGEST_STEP = 1e-3
STEPS = 5
# Directions compared, each one run of 2·STEPS images: the directions all lean on the gradient, so a gradient wrong
# by more than the tolerance is off along each of them, and a few tell no less than many.
DIRECTIONS = 3


@dataclass(frozen=True)
class Direction:
    """One direction: seedᵀ·J·v from the backward graph, and the finite difference at the step that agrees best."""

    backward: float
    finite_difference: float
    step: float
    relative_error: float


def compare(
    model: LoadedModel, session: BackwardSession, image: np.ndarray, directions: int, seed: int
) -> list[Direction]:
    """One comparison per random direction at `image` (one image, no batch axis) and a random seed vector, for the
    model's backward `session`."""
    explained = _explained(model, session)
    rng = np.random.default_rng(seed)
    x = image.astype(np.float32)[None]
    if any(d is None for d in session.seed_shape[1:]):
        raise ValueError(f"the shape of the explained tensor is not known ({session.seed_shape})")
    weights = rng.standard_normal((1, *session.seed_shape[1:])).astype(np.float32)
    gradient = session.run(x, weights).input_gradient.astype(np.float64)
    norm = float(np.linalg.norm(x.astype(np.float64)))
    steps = [LARGEST_STEP * 10.0**-k * norm for k in range(STEPS)]
    return [_best_step(explained, x, weights, gradient, _direction(gradient, rng), steps) for _ in range(directions)]


def worst_error(results: Sequence[Direction]) -> float:
    return max(result.relative_error for result in results)


def _explained(model: LoadedModel, session: BackwardSession) -> Explained:
    """(n, *input shape) -> (n, explained values), flattened."""
    if session.scores_are_model_output and model.signature.input.dtype == "float":
        return lambda images: model.session.run(images)

    def through_backward_graph(images: np.ndarray) -> np.ndarray:
        return session.run(images, np.zeros((len(images), *session.seed_shape[1:]), dtype=np.float32)).scores

    return through_backward_graph


def _best_step(
    explained: Explained,
    x: np.ndarray,
    weights: np.ndarray,
    gradient: np.ndarray,
    v: np.ndarray,
    steps: Sequence[float],
) -> Direction:
    """Every step's x + hv and x - hv in one run; the step where both sides agree best."""
    plus = [(x + step * v).astype(np.float32) for step in steps]
    minus = [(x - step * v).astype(np.float32) for step in steps]
    scores = explained(np.concatenate([*plus, *minus])).astype(np.float64)
    flat_weights = weights.reshape(-1).astype(np.float64)
    candidates = []
    for index, step in enumerate(steps):
        displacement = plus[index].astype(np.float64) - minus[index].astype(np.float64)
        backward = float(np.sum(gradient * displacement)) / (2 * step)
        change = scores[index] - scores[len(steps) + index]
        finite = float(np.sum(flat_weights * change)) / (2 * step)
        scale = max(abs(backward), abs(finite), np.finfo(np.float64).tiny)
        candidates.append(Direction(backward, finite, step, abs(backward - finite) / scale))
    return min(candidates, key=lambda candidate: candidate.relative_error)


def _direction(gradient: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit direction along which gᵀv is about ‖g‖: the gradient reweighted elementwise by uniform random
    weights (isotropic when the gradient is zero)."""
    v = gradient * rng.uniform(size=gradient.shape) if np.any(gradient) else rng.standard_normal(gradient.shape)
    return v / np.linalg.norm(v)
