"""One harness for every VJP rule test: a one-node ONNX model, our backward graph run by ONNX Runtime, and the
same VJP from torch autograd as the independent reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper

from onnxplain.server.engine.backward.builder import SEED_INPUT, differentiate
from onnxplain.server.engine.backward.prepare import with_min_opset
from onnxplain.server.engine.backward.rulesets.base import GRADIENT, RuleSet

# The IR version ONNX Runtime 1.31 reads (onnx 1.23 stamps a newer one).
IR_VERSION = 8


def one_op_model(
    op_type: str,
    inputs: dict[str, np.ndarray],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    input_order: Sequence[str] | None = None,
    outputs: int = 1,
    opset: int = 17,
    **attrs,
) -> onnx.ModelProto:
    """A model with one `op_type` node. `inputs` become graph inputs (fixed shapes), `initializers` constants;
    `input_order` orders the node's inputs ("" for an absent optional input); default: inputs, then initializers."""
    initializers = initializers or {}
    order = list(input_order) if input_order is not None else [*inputs, *initializers]
    names = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op_type, order, names, name=f"{op_type.lower()}_under_test", **attrs)
    graph = helper.make_graph(
        [node],
        "one_op",
        [helper.make_tensor_value_info(n, _elem(v), v.shape) for n, v in inputs.items()],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def symbolic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its graph inputs' first dimension symbolic, as the builder sees real models (it fixes every
    dimension but the batch): rules must not need the batch size."""
    for value in model.graph.input:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    return model


def onnx_vjp(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    seed: np.ndarray,
    wrt: Sequence[str],
    *,
    target: str | None = None,
    ruleset: RuleSet = GRADIENT,
) -> list[np.ndarray]:
    """seedᵀ·∂target/∂w for each w in `wrt`, computed by our backward graph in ONNX Runtime (CPU)."""
    model = with_min_opset(onnx.ModelProto.FromString(model.SerializeToString()))  # the builder edits its model
    built = differentiate(model, target or model.graph.output[0].name, list(wrt), ruleset=ruleset)
    built.model.ir_version = IR_VERSION
    session = ort.InferenceSession(built.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [built.gradients[w] for w in wrt]
    return session.run(names, {**feeds, SEED_INPUT: seed.astype(np.float32)})


def torch_vjp(
    function: Callable[..., torch.Tensor], inputs: Sequence[np.ndarray], seed: np.ndarray
) -> list[np.ndarray]:
    """seedᵀ·∂function/∂input for each input, by torch autograd in float64."""
    tensors = [torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in inputs]
    output = function(*tensors)
    grads = torch.autograd.grad(output, tensors, torch.tensor(seed, dtype=torch.float64), allow_unused=True)
    return [np.zeros_like(x) if g is None else g.numpy() for x, g in zip(inputs, grads, strict=True)]


def forward_shape(model: onnx.ModelProto, feeds: dict[str, np.ndarray], output: int = 0) -> tuple[int, ...]:
    """The shape of the model's output on these feeds (to draw a seed of the right shape)."""
    model.ir_version = IR_VERSION
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[output].shape


def assert_vjp_close(actual: np.ndarray, expected: np.ndarray, tolerance: float = 1e-4) -> None:
    """The tolerance every fp32 VJP check held in the reference measurements: tolerance·max(1, max|expected|)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert error <= tolerance * scale, f"max error {error:.3g} against scale {scale:.3g}"


def check_against_torch(
    model: onnx.ModelProto,
    inputs: dict[str, np.ndarray],
    function: Callable[..., torch.Tensor],
    *,
    seed_seed: int = 0,
    tolerance: float = 1e-4,
) -> None:
    """The whole per-rule check: random seed of the output's shape, our VJP for every graph input against torch's.
    `function` takes the graph inputs (torch tensors, in `inputs` order) and returns the node's output."""
    feeds = {name: np.asarray(value, dtype=np.float32) for name, value in inputs.items()}
    seed = np.random.default_rng(seed_seed).standard_normal(forward_shape(model, feeds)).astype(np.float32)
    ours = onnx_vjp(model, feeds, seed, list(feeds))
    reference = torch_vjp(function, list(feeds.values()), seed)
    for actual, expected in zip(ours, reference, strict=True):
        assert_vjp_close(actual, expected.astype(np.float32), tolerance)


def finite_difference_vjp(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], seed: np.ndarray, wrt: Sequence[str], *, step: float = 1e-2
) -> list[np.ndarray]:
    """seedᵀ·∂output/∂w for each w in `wrt` by central differences on the ONNX Runtime forward: the reference for ops
    without a torch twin. Exact up to float32 rounding for ops linear in w (Resize, pools, transposed convolutions)."""
    model.ir_version = IR_VERSION
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    output = model.graph.output[0].name
    weights = seed.astype(np.float64)
    grads = []
    for name in wrt:
        grad = np.zeros(feeds[name].shape, np.float64)
        for index in np.ndindex(grad.shape):
            sides = []
            for sign in (1.0, -1.0):
                moved = feeds[name].copy()
                moved[index] += sign * step
                sides.append(session.run([output], {**feeds, name: moved})[0].astype(np.float64))
            grad[index] = float((weights * (sides[0] - sides[1])).sum()) / (2 * step)
        grads.append(grad)
    return grads


def check_against_finite_differences(
    model: onnx.ModelProto,
    inputs: dict[str, np.ndarray],
    *,
    step: float = 1e-2,
    seed_seed: int = 0,
    tolerance: float = 1e-4,
) -> None:
    """check_against_torch with central differences of the ONNX Runtime forward as the reference."""
    feeds = {name: np.asarray(value, dtype=np.float32) for name, value in inputs.items()}
    seed = np.random.default_rng(seed_seed).standard_normal(forward_shape(model, feeds)).astype(np.float32)
    ours = onnx_vjp(model, feeds, seed, list(feeds))
    reference = finite_difference_vjp(model, feeds, seed, list(feeds), step=step)
    for actual, expected in zip(ours, reference, strict=True):
        assert_vjp_close(actual, expected.astype(np.float32), tolerance)


def _elem(value: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)


def assert_relative_close(actual: np.ndarray, expected: np.ndarray, tolerance: float = 1e-4) -> None:
    """Attribution maps against a peer library, at the map's own scale (often far below 1): error ≤
    tolerance·max|expected|."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(np.abs(expected).max(initial=0.0))
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert scale > 0 and error <= tolerance * scale, f"max error {error:.3g} against max |reference| {scale:.3g}"
