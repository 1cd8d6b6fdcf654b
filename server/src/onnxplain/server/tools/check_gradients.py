"""`onnxplain check-gradients MODEL.onnx`: does the backward graph the server would build for this model compute
the gradient? Any ONNX classifier file (any exporter, NCHW or NHWC, opset 11 and up) is checked the same way: at a
random input x in [0, 1) and a random seed over the classes, seedᵀ·J·v from one run of the backward graph against
the central finite difference seedᵀ·(f(x+hv) - f(x-hv))/2h along random unit directions v.

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
nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from onnxplain.server.engine.backward.builder import MissingRule
from onnxplain.server.engine.backward.graph import model_opset
from onnxplain.server.engine.backward.prepare import ConversionError, prepare_forward
from onnxplain.server.engine.backward.rulesets.base import GRADIENT
from onnxplain.server.engine.gradients import BackwardSpec, backward_graph
from onnxplain.server.engine.providers import CPU
from onnxplain.server.engine.session import create_session, session_options
from onnxplain.server.imaging.layout import image_shape
from onnxplain.server.repository.signature import ModelSignature, SignatureError, read_signature

RULE_SETS = {GRADIENT.name: GRADIENT}
# Exit codes: the gradients agree; they do not; the check could not run.
AGREE, DISAGREE, CANNOT_CHECK = 0, 1, 2


class CannotCheck(ValueError):
    """The model cannot be checked as given; the message says why (and what to pass)."""


class BrokenGraph(RuntimeError):
    """ONNX Runtime refused to load or run the backward graph: a rule emitted something wrong."""


def sample_shape(signature: ModelSignature, size: Sequence[int] | None) -> tuple[int, int, int]:
    """The input shape without the batch, in the model's layout: the model's own, with `size` (H, W) filling
    dynamic spatial dimensions (and having to agree with fixed ones)."""
    height, width = signature.spatial_size
    if size is not None:
        for name, fixed, asked in (("height", height, size[0]), ("width", width, size[1])):
            if fixed is not None and fixed != asked:
                raise CannotCheck(f"the model's input {name} is fixed at {fixed}, not {asked}")
        height, width = size
    if height is None or width is None:
        raise CannotCheck(
            f"input {signature.input.name!r} has a dynamic image size {_show(signature.input.shape)}: pass --size H W"
        )
    channels = signature.channels
    if channels is None:
        raise CannotCheck(f"input {signature.input.name!r} has a dynamic channel count {_show(signature.input.shape)}")
    return image_shape(channels, height, width, signature.layout)


@dataclass(frozen=True)
class Direction:
    """One direction: seedᵀ·J·v from the backward graph, and the finite difference at the step that agrees best."""

    backward: float
    finite_difference: float
    step: float
    relative_error: float


class GradientCheck:
    """A model's backward graph in an ONNX Runtime session, with the names it is fed and read by."""

    def __init__(
        self, model: onnx.ModelProto, signature: ModelSignature, shape: Sequence[int], spec: BackwardSpec
    ) -> None:
        self.signature = signature
        self.opset = model_opset(model)
        # Prepared first (the build's own preparation is then a no-op), so that the nodes the builder adds can be
        # told from those of the prepared forward graph. The input shape is fixed before the opset is raised: the
        # version converter stamps zero-sized shapes on a graph whose image size is dynamic.
        model = prepare_forward(model, signature.input.name, shape)
        forward_outputs = {name for node in model.graph.node for name in node.output}
        self.built, _ = backward_graph(model, signature, shape, spec)
        self.ops = _op_counts(self.built.model, forward_outputs | {self.built.target_output})
        try:
            self.session = create_session(self.built.model, session_options(0), [CPU])
        except Exception as error:  # ONNX Runtime's errors derive from Exception only
            raise BrokenGraph(f"ONNX Runtime cannot load the backward graph: {error}") from error
        self.batch = signature.fixed_batch or 1
        self.shape = tuple(shape)
        image = next(v for v in self.built.model.graph.input if v.name == signature.input.name)
        self.input_dtype = helper.tensor_dtype_to_np_dtype(image.type.tensor_type.elem_type)
        if any(d is None for d in self.built.seed_shape[1:]):
            raise CannotCheck(f"the shape of {self.built.target_output!r} is not known ({self.built.seed_shape})")
        self.seed_shape = (self.batch, *self.built.seed_shape[1:])

    def target(self, x: np.ndarray) -> np.ndarray:
        """The explained tensor f(x) (the backward graph's first output; the seed does not change it)."""
        feed = {self.signature.input.name: x, self.built.seed_input: np.zeros(self.seed_shape, self.input_dtype)}
        return self._run(self.built.target_output, feed)

    def gradient(self, x: np.ndarray, seed: np.ndarray) -> np.ndarray:
        """seedᵀ·∂f/∂x from the backward graph."""
        output = self.built.gradients[self.signature.input.name]
        return self._run(output, {self.signature.input.name: x, self.built.seed_input: seed})

    def _run(self, output: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        try:
            (value,) = self.session.run([output], feed)
        except Exception as error:
            raise BrokenGraph(f"ONNX Runtime failed to run the backward graph: {error}") from error
        return value.astype(np.float64)

    def compare(self, directions: int, steps: Sequence[float], seed: int) -> list[Direction]:
        """One comparison per random direction, at a random input and seed vector; `steps` are relative to ‖x‖."""
        rng = np.random.default_rng(seed)
        x = rng.uniform(size=(self.batch, *self.shape)).astype(self.input_dtype)
        weights = rng.standard_normal(self.seed_shape).astype(self.input_dtype)
        gradient = self.gradient(x, weights)
        norm = float(np.linalg.norm(x.astype(np.float64)))
        return [
            self._best_step(x, weights, gradient, _direction(gradient, rng), norm, steps) for _ in range(directions)
        ]

    def _best_step(
        self,
        x: np.ndarray,
        weights: np.ndarray,
        gradient: np.ndarray,
        v: np.ndarray,
        norm: float,
        steps: Sequence[float],
    ) -> Direction:
        candidates = []
        for relative in steps:
            step = relative * norm
            plus, minus = (x + step * v).astype(self.input_dtype), (x - step * v).astype(self.input_dtype)
            displacement = plus.astype(np.float64) - minus.astype(np.float64)
            backward = float(np.sum(gradient * displacement)) / (2 * step)
            change = self.target(plus) - self.target(minus)
            finite = float(np.sum(weights.astype(np.float64) * change)) / (2 * step)
            scale = max(abs(backward), abs(finite), np.finfo(np.float64).tiny)
            candidates.append(Direction(backward, finite, step, abs(backward - finite) / scale))
        return min(candidates, key=lambda candidate: candidate.relative_error)


def _direction(gradient: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit direction along which gᵀv is about ‖g‖: the gradient reweighted elementwise by uniform random
    weights (isotropic when the gradient is zero)."""
    v = gradient * rng.uniform(size=gradient.shape) if np.any(gradient) else rng.standard_normal(gradient.shape)
    return v / np.linalg.norm(v)


def run(args: argparse.Namespace) -> int:
    try:
        check, results = _check(args)
    except (MissingRule, ConversionError, SignatureError, CannotCheck) as error:
        print(f"error: {error}", file=sys.stderr)
        return CANNOT_CHECK
    except BrokenGraph as error:
        print(f"error: {error}", file=sys.stderr)
        return DISAGREE
    print(_describe(args.model, check, args.probability))
    for index, result in enumerate(results, 1):
        print(
            f"direction {index}/{len(results)}: backward {result.backward: .6e}  finite difference "
            f"{result.finite_difference: .6e} (h {result.step:.1e})  relative error {result.relative_error:.2e}"
        )
    worst = max(result.relative_error for result in results)
    agree = worst < args.tolerance
    print(f"max relative error {worst:.2e} (tolerance {args.tolerance:.1e}): {'ok' if agree else 'FAILED'}")
    print(f"forward ops: {_show_counts(check.ops.forward)}")
    print(f"backward ops: {_show_counts(check.ops.backward)}")
    return AGREE if agree else DISAGREE


def _check(args: argparse.Namespace) -> tuple[GradientCheck, list[Direction]]:
    try:
        model = onnx.load(str(args.model))
    except (OSError, DecodeError) as error:
        raise CannotCheck(f"cannot read {args.model} as an ONNX model: {error}") from error
    signature = read_signature(model)
    spec = BackwardSpec(ruleset=RULE_SETS[args.rule_set], probability=args.probability)
    check = GradientCheck(model, signature, sample_shape(signature, args.size), spec)
    steps = [args.epsilon * 10.0**-k for k in range(args.steps)]
    return check, check.compare(args.directions, steps, args.seed)


@dataclass(frozen=True)
class OpCounts:
    forward: Counter[str]
    backward: Counter[str]


def _op_counts(built: onnx.ModelProto, forward_outputs: set[str]) -> OpCounts:
    """Op types of the forward nodes and of the nodes the builder added (those producing new tensors)."""
    forward, backward = Counter(), Counter()
    for node in built.graph.node:
        (forward if node.output and node.output[0] in forward_outputs else backward)[node.op_type] += 1
    return OpCounts(forward, backward)


def _describe(path: Path, check: GradientCheck, probability: bool) -> str:
    signature = check.signature
    explained = "probabilities" if probability else "logits"
    return (
        f"{path}: opset {check.opset}, {signature.layout} input {signature.input.name!r} "
        f"{_show((check.batch, *check.shape))}, explaining the {explained} "
        f"({check.built.target_output!r})"
    )


def _show_counts(counts: Counter[str]) -> str:
    return ", ".join(f"{op} {count}" for op, count in sorted(counts.items())) or "none"


def _show(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
