"""Input gradients of int8-quantized models: the straight-through estimator (STE) of quantization-aware training on
QuantizeLinear→DequantizeLinear pairs (rules/op_quantize.py), and quantized operators rewritten into such pairs
(quantized.py), on a small residual CNN quantized by onnxruntime.quantization in its three forms (static QDQ, static
QOperator, dynamic).

The CNN's weights are He-scaled so its activations stay near 1: quantization then rounds real values, not noise.
Every model is quantized with reduce_range (7-bit weights): on x86 CPUs without VNNI, ONNX Runtime's u8-by-s8 kernels
add pairs of products in saturating int16, and with full-range weights its MatMulInteger came out 9605 off the exact
integer product (of 77473), 0.08 of the logits (0.86); our float rewrite computes the exact product, so the forward
comparisons below need ONNX Runtime's kernels exact too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from support.models import export
from support.variants import quantized
from support.vjp import IR_VERSION

from onnxplain.server.engine.backward.builder import SEED_INPUT, MissingRule, differentiate
from onnxplain.server.engine.backward.path import differentiable_path
from onnxplain.server.engine.backward.prepare import infer_shapes, with_min_opset
from onnxplain.server.engine.backward.quantized import dequantize_operators
from onnxplain.server.engine.backward.rules import rule_for

SHAPE = (3, 16, 16)
CLASSES = 5


class ResidualCNN(torch.nn.Module):
    """Conv-ReLU-MaxPool, a residual block (Conv-ReLU-Conv, Add, ReLU), global average pool, Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.conv1 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.gap = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(8, CLASSES)
        with torch.no_grad():
            for layer in (self.stem, self.conv1, self.conv2, self.head):
                fan_in = layer.weight[0].numel()
                layer.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                layer.bias.uniform_(-0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.stem(x)))
        x = torch.relu(x + self.conv2(torch.relu(self.conv1(x))))
        return self.head(self.gap(x).flatten(1))


def _images(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *SHAPE)).astype(np.float32)


@functools.cache
def _models(directory: Path) -> dict[str, onnx.ModelProto]:
    """The float model and its three quantizations, by form."""
    float_path = directory / "float.onnx"
    float_path.write_bytes(export(ResidualCNN(), (1, *SHAPE)))
    return {"float": onnx.load(float_path), **quantized(float_path, _images(1, 8))}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, onnx.ModelProto]:
    return _models(tmp_path_factory.mktemp("quantized"))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    model.ir_version = IR_VERSION
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _canonized(model: onnx.ModelProto) -> onnx.ModelProto:
    """What the builder's pipeline sees: a copy raised to the minimum opset, quantized operators rewritten."""
    model = with_min_opset(onnx.ModelProto.FromString(model.SerializeToString()))
    dequantize_operators(model)
    return model


def _gradient(model: onnx.ModelProto, images: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scores and seedᵀ·∂scores/∂input of each image, from our backward graph in ONNX Runtime."""
    built = differentiate(_canonized(model), "scores", ["input"])
    return tuple(_session(built.model).run(["scores", built.gradients["input"]], {"input": images, SEED_INPUT: seeds}))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


IMAGES = _images(2, 6)
SEEDS = np.eye(CLASSES, dtype=np.float32)[np.arange(len(IMAGES)) % CLASSES]


# (a) The QDQ model's STE gradient against torch autograd through fake_quantize at the same points.


def _fake_quantized_torch(model: onnx.ModelProto) -> Callable[[torch.Tensor], torch.Tensor]:
    """The QDQ graph evaluated by torch in float64: each QuantizeLinear→DequantizeLinear pair of an activation as
    torch.fake_quantize_per_tensor_affine with the model's scale and zero point, weights and biases as the model
    dequantizes them. Covers the ops ONNX Runtime's quantizer writes for ResidualCNN."""
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    ranges = {TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127)}

    def attr(node: onnx.NodeProto, name: str, default: object) -> object:
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    def forward(x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {model.graph.input[0].name: x}
        for node in model.graph.node:
            ins = [values.get(name) for name in node.input]
            if node.op_type == "DequantizeLinear" and node.input[0] in constants:
                q, scale, zero = (constants[name].astype(np.float64) for name in node.input)
                axis = attr(node, "axis", 1)
                shape = [-1 if i == axis else 1 for i in range(q.ndim)] if scale.size > 1 else []
                out = torch.tensor((q - zero.reshape(shape)) * scale.reshape(shape))
            elif node.op_type == "DequantizeLinear":
                out = ins[0]  # the pair's value is the fake-quantized one its QuantizeLinear computed
            elif node.op_type == "QuantizeLinear":
                scale, zero = (constants[name] for name in node.input[1:3])
                low, high = ranges[helper.np_dtype_to_tensor_dtype(zero.dtype)]
                out = torch.fake_quantize_per_tensor_affine(ins[0], float(scale), int(zero), low, high)
            elif node.op_type == "Conv":
                pads = attr(node, "pads", [0, 0, 0, 0])
                out = F.conv2d(*ins, stride=attr(node, "strides", [1, 1]), padding=pads[:2])
            elif node.op_type == "MaxPool":
                out = F.max_pool2d(ins[0], attr(node, "kernel_shape", None), attr(node, "strides", None))
            elif node.op_type == "Gemm":
                out = F.linear(*ins)  # torch's Linear exports transB=1
            else:
                out = {
                    "Add": lambda a, b: a + b,
                    "Relu": torch.relu,
                    "GlobalAveragePool": lambda a: a.mean((2, 3), keepdim=True),
                    "Flatten": lambda a: a.flatten(1),
                }[node.op_type](*ins)
            values[node.output[0]] = out
        return values[model.graph.output[0].name]

    return forward


def test_qdq_gradient_equals_torch_fake_quantize(models: dict[str, onnx.ModelProto]) -> None:
    """Equal masks need both sides to round x/scale alike; float32 (ours) and float64 (torch) can differ where it
    lies within rounding of .5, which moves one level, and a saturating element's mask with it. Measured: equal
    scores, max error 1.1e-8 of max|reference| 0.062, no element off; the bound allows one flipped element per map."""
    scores, ours = _gradient(models["qdq"], IMAGES, SEEDS)
    x = torch.tensor(IMAGES, dtype=torch.float64, requires_grad=True)
    output = _fake_quantized_torch(models["qdq"])(x)
    (reference,) = torch.autograd.grad(output, x, torch.tensor(SEEDS, dtype=torch.float64))
    reference = reference.numpy()
    np.testing.assert_allclose(scores, output.detach().numpy(), atol=1e-5)
    scale = np.abs(reference).max()
    off = np.abs(ours - reference) > 1e-5 * scale
    assert off.reshape(len(IMAGES), -1).sum(1).max() <= 1, f"{off.sum()} elements off"


# (b), (c) The STE gradient against the float model's, and the rewritten forward against the quantized model's.

# The lowest per-image cosine with the float model's input gradient, measured on the six images: QDQ 0.958,
# QOperator 0.958 (the same graph once rewritten), dynamic 0.960; on 40 other images QDQ 0.929 and dynamic 0.954 at
# the lowest (medians 0.977, 0.984). 8-bit activations and 7-bit weights move each layer's ReLU masks where values
# round across zero. A wrong mask is far lower: passing the gradient through every QuantizeLinear unmasked (which
# drops the ReLUs the quantizer folded into zero points) gives 0.49 to 0.82 on these images.
COSINE_FLOOR = 0.93


@pytest.mark.parametrize("form", ["qdq", "qoperator", "dynamic"])
def test_ste_gradient_is_close_to_the_float_gradient(models: dict[str, onnx.ModelProto], form: str) -> None:
    _, float_gradient = _gradient(models["float"], IMAGES, SEEDS)
    _, ours = _gradient(models[form], IMAGES, SEEDS)
    cosines = _cosines(ours, float_gradient)
    print(f"{form}: cosine with the float gradient per image {np.round(cosines, 4)}")
    assert cosines.min() >= COSINE_FLOOR


@pytest.mark.parametrize("form", ["qoperator", "dynamic"])
def test_rewritten_forward_matches_the_quantized_model(models: dict[str, onnx.ModelProto], form: str) -> None:
    """Our float ops round once per quantization where ONNX Runtime's integer kernels requantize in fixed point:
    a level can differ by one where a value lies within float32 rounding of .5. Measured: identical logits
    (QOperator), 7e-7 off logits up to 0.86 (dynamic: float logits, float32 rounding of the rescaled weights). Bound:
    one quantum of the logits (QOperator) or 1e-5 (dynamic)."""
    original = _session(models[form]).run(["scores"], {"input": IMAGES})[0]
    scores, _ = _gradient(models[form], IMAGES, SEEDS)
    output_scale = _output_scale(models[form]) if form == "qoperator" else 1e-5
    assert np.abs(scores - original).max() <= output_scale


def _output_scale(model: onnx.ModelProto) -> float:
    last = next(node for node in model.graph.node if node.output[0] == "scores")
    return float(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == last.input[1])))


# The STE of one pair, per tensor and per axis, for each integer type, against torch's fake_quantize.

PAIRS = {
    # name: (opset, quantized type, per-axis scales and zero points)
    "uint8": (17, np.uint8, False),
    "int8_per_channel": (17, np.int8, True),
    "int16": (21, np.int16, False),
    "uint16_per_channel": (21, np.uint16, True),
}


@pytest.mark.parametrize("case", list(PAIRS))
def test_pair_ste_equals_torch_fake_quantize(case: str) -> None:
    opset, dtype, per_axis = PAIRS[case]
    low, high = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 5)).astype(np.float32) * 3
    # The representable range is about [-4, 3] (stretched per channel): some values saturate on either side.
    stretch = np.array([1.0, 0.7, 1.3] if per_axis else 1.0)
    scale = (7.0 * stretch / (high - low)).astype(np.float32)
    zero = (low + np.round(4.0 * stretch / scale)).astype(dtype)
    q = helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], axis=1)
    dq = helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], axis=1)
    model = _graph([q, dq], {"scale": scale, "zero": zero}, opset)
    seed = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    ours = _run_gradient(model, x, seed)
    tensor = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    if per_axis:
        zeros = torch.tensor(zero.astype(np.int32))
        y = torch.fake_quantize_per_channel_affine(tensor, torch.tensor(scale), zeros, 1, low, high)
    else:
        y = torch.fake_quantize_per_tensor_affine(tensor, float(scale), int(zero), low, high)
    (reference,) = torch.autograd.grad(y, tensor, torch.tensor(seed, dtype=torch.float64))
    assert 0.05 < (reference.numpy() == 0).mean() < 0.5  # the mask matters
    np.testing.assert_allclose(ours, reference.numpy(), atol=1e-6)


def _graph(nodes: list[onnx.NodeProto], initializers: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "quantized",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 5, 5])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def _run_gradient(model: onnx.ModelProto, x: np.ndarray, seed: np.ndarray) -> np.ndarray:
    built = differentiate(_canonized(model), model.graph.output[0].name, ["x"])
    return _session(built.model).run([built.gradients["x"]], {"x": x, SEED_INPUT: seed})[0]


# Refusals: the STE is defined only for a quantize-dequantize pair, of integer types, without blocks.

UINT8_PARAMS = {"scale": np.float32(0.05), "zero": np.uint8(128)}


def _lone_quantize() -> onnx.ModelProto:
    q = helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="lone")
    return _graph([q, helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)], UINT8_PARAMS, 17)


def _other_scale() -> onnx.ModelProto:
    q = helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="q")
    dq = helper.make_node("DequantizeLinear", ["q", "other", "zero"], ["y"], name="dq")
    return _graph([q, dq], {**UINT8_PARAMS, "other": np.float32(0.1)}, 17)


def _float8() -> onnx.ModelProto:
    zero = helper.make_tensor("zero", TensorProto.FLOAT8E4M3FN, [], [0.0])
    q = helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="q")
    dq = helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], name="dq")
    model = _graph([q, dq], {"scale": np.float32(0.05)}, 19)
    model.graph.initializer.append(zero)
    return model


def _blocked() -> onnx.ModelProto:
    params = {"scale": np.full((1, 3, 5, 1), 0.05, np.float32), "zero": np.full((1, 3, 5, 1), 128, np.uint8)}
    q = helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="q", axis=3, block_size=5)
    dq = helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], name="dq", axis=3, block_size=5)
    return _graph([q, dq], params, 21)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_lone_quantize, "is read by Cast (node"),
        (_other_scale, "with another scale or zero point"),
        (_float8, "quantization to FLOAT8E4M3FN"),
        (_blocked, "blocked quantization"),
    ],
)
def test_ste_outside_a_pair_is_refused(build: Callable[[], onnx.ModelProto], message: str) -> None:
    with pytest.raises(MissingRule, match="no gradient for op QuantizeLinear") as error:
        differentiate(build(), "y", ["x"])
    assert message in str(error.value)


# Each rewrite of a quantized operator computes what ONNX Runtime's kernel computes, within one output quantum.

_RNG = np.random.default_rng(5)
_MATRIX = _RNG.integers(0, 200, (3, 4)).astype(np.uint8)
_IMAGE = _RNG.integers(0, 255, (2, 3, 4, 4)).astype(np.uint8)
_CONSTANTS = {
    "a_scale": np.float32(0.02),
    "a_zero": np.uint8(100),
    "b": _RNG.integers(-60, 60, (4, 5)).astype(np.int8),
    "bt": _RNG.integers(-60, 60, (5, 4)).astype(np.int8),
    "b_scale": np.asarray([0.01, 0.02, 0.015, 0.01, 0.03], np.float32),
    "b_zero": np.zeros(5, np.int8),
    "c": _RNG.integers(-500, 500, 5).astype(np.int32),
    "other": _RNG.integers(0, 255, (3, 4)).astype(np.uint8),
    "other_scale": np.float32(0.03),
    "other_zero": np.uint8(120),
    "y_scale": np.float32(0.05),
    "y_zero": np.uint8(128),
}
_A, _OTHER, _Y = ["a", "a_scale", "a_zero"], ["other", "other_scale", "other_zero"], ["y_scale", "y_zero"]
_QGEMM = [*_A, "bt", "b_scale", "b_zero", "c"]
MS = "com.microsoft"
REWRITES = {
    # name: (node, input "a", whether the output is float)
    "QLinearMatMul": (helper.make_node("QLinearMatMul", [*_A, "b", "b_scale", "b_zero", *_Y], ["y"]), _MATRIX, False),
    "QGemm": (helper.make_node("QGemm", [*_QGEMM, *_Y], ["y"], domain=MS, alpha=0.5, transB=1), _MATRIX, False),
    "QGemm_float_output": (helper.make_node("QGemm", _QGEMM, ["y"], domain=MS, alpha=0.5, transB=1), _MATRIX, True),
    "QLinearAdd": (helper.make_node("QLinearAdd", [*_A, *_OTHER, *_Y], ["y"], domain=MS), _MATRIX, False),
    "QLinearMul": (helper.make_node("QLinearMul", [*_A, *_OTHER, *_Y], ["y"], domain=MS), _MATRIX, False),
    "QLinearConcat": (helper.make_node("QLinearConcat", [*_Y, *_A, *_OTHER], ["y"], domain=MS, axis=1), _MATRIX, False),
    "QLinearSigmoid": (helper.make_node("QLinearSigmoid", [*_A, *_Y], ["y"], domain=MS), _MATRIX, False),
    "QLinearLeakyRelu": (helper.make_node("QLinearLeakyRelu", [*_A, *_Y], ["y"], domain=MS, alpha=0.1), _MATRIX, False),
    "QLinearGlobalAveragePool": (
        helper.make_node("QLinearGlobalAveragePool", [*_A, *_Y], ["y"], domain=MS),
        _IMAGE,
        False,
    ),
}


@pytest.mark.parametrize("case", list(REWRITES))
def test_rewrite_matches_the_onnx_runtime_kernel(case: str) -> None:
    node, a, float_output = REWRITES[case]
    graph = helper.make_graph(
        [node],
        case,
        [helper.make_tensor_value_info("a", TensorProto.UINT8, a.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT if float_output else TensorProto.UINT8, None)],
        [numpy_helper.from_array(value, name) for name, value in _CONSTANTS.items() if name in node.input],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)
    expected = _session(onnx.ModelProto.FromString(model.SerializeToString())).run(None, {"a": a})[0]
    rewritten = _canonized(model)
    assert all(n.domain != MS and not n.op_type.startswith("QLinear") for n in rewritten.graph.node)
    actual = _session(rewritten).run(None, {"a": a})[0].astype(np.float64)
    quantum = 1e-6 * np.abs(expected).max() if float_output else 1.0
    assert np.abs(actual - expected.astype(np.float64)).max() <= quantum


def test_path_reaches_quantized_operators_before_the_rewrite(models: dict[str, onnx.ModelProto]) -> None:
    """The differentiable path continues through the integer outputs of quantizing ops, so a scan of the raw QOperator
    model finds a quantized operator without a rule (it stops at the uint8 MaxPool after it), and the rewritten model
    has none; the QDQ model needs no rewrite."""
    for form, raw_missing in (("qoperator", {"QLinearConv"}), ("qdq", set())):
        for model, missing in ((models[form], raw_missing), (_canonized(models[form]), set())):
            _, _, dtypes = infer_shapes(onnx.ModelProto.FromString(model.SerializeToString()))
            nodes, _ = differentiable_path(model.graph, ["input"], "scores", dtypes)
            assert {node.op_type for node in nodes if rule_for(node.op_type) is None} == missing
