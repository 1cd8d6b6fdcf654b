"""LRP rule sets against Zennit 0.5.1 (every composite, on a VGG-style model with BatchNorm, an average-pooling model
and a residual model) and against Captum's LRP (its default ε rule); relevance conservation; the canonizers; and the
rule-set factory's parameters."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from captum.attr import LRP
from onnx import TensorProto, helper, numpy_helper
from support.models import IR_VERSION
from support.vjp import assert_relative_close, onnx_vjp
from support.zoo import zennit

from onnxplain.server.engine.backward.builder import differentiate
from onnxplain.server.engine.backward.rulesets import COMPOSITE_NAMES, get_ruleset
from onnxplain.server.engine.backward.rulesets.lrp.canonizers import (
    fold_batch_norms,
    merge_matmul_bias,
    resolve_constant_aliases,
)

zcomposites, zrules, zcanonizers, zlayer, ztypes = (
    zennit(name) for name in ("composites", "rules", "canonizers", "layer", "types")
)

SHAPE = (3, 8, 8)
CLASSES = 4
TARGETS = [1, 3]
# Per-channel input bounds for the z-box rule.
LOW, HIGH = (-3.0, -2.5, -2.0), (3.0, 2.5, 2.0)


class VGGBatchNorm(torch.nn.Module):
    """Conv-BN-ReLU blocks with max pooling, then a two-layer classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, 3, padding=1),
            torch.nn.BatchNorm2d(6),
            torch.nn.ReLU(),
            torch.nn.Conv2d(6, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(8 * 2 * 2, 16), torch.nn.ReLU(), torch.nn.Linear(16, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class AveragePoolCNN(torch.nn.Module):
    """Conv-ReLU-AvgPool-Conv-ReLU-AdaptiveAvgPool-Linear: only layers Captum's LRP and Zennit treat alike."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.pool = torch.nn.AvgPool2d(2)
        self.conv2 = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.gap = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gap(self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x))))))
        return self.head(torch.flatten(x, 1))


class SqueezeExciteCNN(torch.nn.Module):
    """A squeeze-excite gate (Mul by a broadcast sigmoid), a Div and a Mul by constants, average pooling, no biases."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.relu = torch.nn.ReLU()
        self.squeeze = torch.nn.AdaptiveAvgPool2d(1)
        self.excite = torch.nn.Conv2d(6, 6, 1, bias=False)
        self.gate = torch.nn.Sigmoid()
        self.gap = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(6, CLASSES, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        x = 3.0 * (x * self.gate(self.excite(self.squeeze(x)))) / 2.0
        return self.head(torch.flatten(self.gap(x), 1))


class ResidualCNN(torch.nn.Module):
    """A residual block; for Zennit the sum is its Sum module over stacked operands (what its ResNet canonizer does),
    for the export a plain addition: the same function."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.relu_stem = torch.nn.ReLU()
        self.conv1 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.sum = zlayer.Sum()
        self.relu_out = torch.nn.ReLU()
        self.gap = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(6, CLASSES)
        self.zennit_sum = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.relu_stem(self.stem(x))
        branch = self.conv2(self.relu1(self.conv1(skip)))
        total = self.sum(torch.stack([skip, branch], dim=-1)) if self.zennit_sum else skip + branch
        return self.head(torch.flatten(self.gap(self.relu_out(total)), 1))


def _seeded(module: torch.nn.Module) -> torch.nn.Module:
    """Fixed weights, scaled so activations are not tiny; BatchNorm statistics far from the identity."""
    torch.manual_seed(0)
    for parameter in module.parameters():
        bound = 0.6 if parameter.ndim > 1 else 0.3
        torch.nn.init.uniform_(parameter, -bound, bound)
    for child in module.modules():
        if isinstance(child, torch.nn.BatchNorm2d):
            child.weight.data.uniform_(0.5, 1.5)
            child.running_mean.uniform_(-0.5, 0.5)
            child.running_var.uniform_(0.5, 2.0)
    return module.eval()


def _export(module: torch.nn.Module) -> onnx.ModelProto:
    """The legacy export with BatchNormalization kept as a node: support.models.export folds it into the convolution
    in eval mode, and here the canonizer must do that."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(1, *SHAPE),),
            buffer,
            input_names=["input"],
            output_names=["scores"],
            dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}},
            opset_version=17,
            dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,
        )
    model = onnx.load_from_string(buffer.getvalue())
    model.ir_version = IR_VERSION
    return model


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((len(TARGETS), *SHAPE)).astype(np.float32)
    return x, np.eye(CLASSES, dtype=np.float32)[TARGETS]


def _ours(module: torch.nn.Module, x: np.ndarray, seed: np.ndarray, composite: str, **params) -> np.ndarray:
    ruleset = get_ruleset("lrp", composite=composite, **params)
    return onnx_vjp(_export(module), {"input": x}, seed, ["input"], ruleset=ruleset)[0]


def _zennit_relevance(module: torch.nn.Module, composite, x: np.ndarray, seed: np.ndarray) -> np.ndarray:
    inputs = torch.tensor(x, requires_grad=True)
    with composite.context(module) as modified:
        (relevance,) = torch.autograd.grad(modified(inputs), inputs, torch.tensor(seed))
    return relevance.numpy()


def _bounds() -> dict[str, torch.Tensor]:
    return {name: torch.tensor(bound).reshape(1, -1, 1, 1) for name, bound in (("low", LOW), ("high", HIGH))}


def _layer_map(rule) -> list:
    return [*zcomposites.layer_map_base(), (ztypes.Linear, rule)]


# Our composite and parameters -> the Zennit composite (given its canonizers) that must give the same relevance.
ZENNIT: dict[str, tuple[str, dict, Callable[[list], object]]] = {
    "epsilon_plus": ("epsilon_plus", {}, lambda c: zcomposites.EpsilonPlus(canonizers=c)),
    "epsilon_plus_eps0.1": ("epsilon_plus", {"epsilon": 0.1}, lambda c: zcomposites.EpsilonPlus(0.1, canonizers=c)),
    "epsilon_plus_flat": ("epsilon_plus_flat", {}, lambda c: zcomposites.EpsilonPlusFlat(canonizers=c)),
    "epsilon_alpha2_beta1": ("epsilon_alpha2_beta1", {}, lambda c: zcomposites.EpsilonAlpha2Beta1(canonizers=c)),
    "epsilon_alpha2_beta1_flat": (
        "epsilon_alpha2_beta1_flat",
        {},
        lambda c: zcomposites.EpsilonAlpha2Beta1Flat(canonizers=c),
    ),
    "epsilon_gamma_box": (
        "epsilon_gamma_box",
        {"low": LOW, "high": HIGH, "gamma": 0.5},
        lambda c: zcomposites.EpsilonGammaBox(**_bounds(), gamma=0.5, canonizers=c),
    ),
    "z_plus": ("z_plus", {}, lambda c: zcomposites.LayerMapComposite(_layer_map(zrules.ZPlus()), canonizers=c)),
    "alpha3_beta2": (
        "alpha_beta",
        {"alpha": 3, "beta": 2},
        lambda c: zcomposites.LayerMapComposite(_layer_map(zrules.AlphaBeta(3.0, 2.0)), canonizers=c),
    ),
    "deep_taylor_box": (
        "deep_taylor",
        {"low": LOW, "high": HIGH},
        lambda c: zcomposites.SpecialFirstLayerMapComposite(
            _layer_map(zrules.ZPlus()), [(ztypes.Linear, zrules.ZBox(**_bounds()))], canonizers=c
        ),
    ),
    "deep_taylor_wsquare": (
        "deep_taylor",
        {},
        lambda c: zcomposites.SpecialFirstLayerMapComposite(
            _layer_map(zrules.ZPlus()), [(ztypes.Linear, zrules.WSquare())], canonizers=c
        ),
    ),
}


@pytest.mark.parametrize("model_class", [VGGBatchNorm, AveragePoolCNN, ResidualCNN])
@pytest.mark.parametrize("case", list(ZENNIT))
def test_matches_zennit(model_class: type[torch.nn.Module], case: str) -> None:
    composite, params, zennit_composite = ZENNIT[case]
    module = _seeded(model_class())
    x, seed = _inputs()
    ours = _ours(module, x, seed, composite, **params)
    module.zennit_sum = True
    reference = _zennit_relevance(module, zennit_composite([zcanonizers.SequentialMergeBatchNorm()]), x, seed)
    assert_relative_close(ours, reference)


def test_batch_norm_is_folded_before_the_rules() -> None:
    """The VGG comparison above rests on the canonizer: the exported graph has the BatchNormalization nodes, and
    Zennit without its BatchNorm merge (BatchNorm then passes relevance) gives another map."""
    module = _seeded(VGGBatchNorm())
    assert [node.op_type for node in _export(module).graph.node].count("BatchNormalization") == 3
    x, seed = _inputs()
    ours = _ours(module, x, seed, "epsilon_plus")
    unmerged = _zennit_relevance(module, zcomposites.EpsilonPlus(), x, seed)
    assert np.abs(ours - unmerged).max() > 0.01 * np.abs(unmerged).max()


def test_epsilon_matches_captum() -> None:
    """Captum's LRP (ε = 1e-9 on convolutions, pools and the linear layer) starts from f_c, our seed from the seed
    row: seeding f_c·onehot(c) gives Captum's map."""
    module = _seeded(AveragePoolCNN())
    x, onehot = _inputs()
    scores = module(torch.tensor(x)).detach().numpy()
    ours = _ours(module, x, onehot * scores, "epsilon")
    reference = LRP(module).attribute(torch.tensor(x, requires_grad=True), target=TARGETS).detach().numpy()
    assert_relative_close(ours, reference)


@pytest.mark.parametrize("model_class", [AveragePoolCNN, SqueezeExciteCNN])
def test_epsilon_conserves_relevance_without_biases(model_class: type[torch.nn.Module]) -> None:
    """Sum of input relevance = target score: pooling (Norm), the gate (relevance to the features only, none into the
    gate's branch) and the constant Mul/Div (pass) must neither lose nor add relevance."""
    module = _seeded(model_class())
    for child in module.modules():
        if isinstance(child, (torch.nn.Conv2d, torch.nn.Linear)) and child.bias is not None:
            child.bias.data.zero_()
    x, onehot = _inputs()
    scores = module(torch.tensor(x)).detach().numpy()
    relevance = _ours(module, x, onehot * scores, "epsilon")
    totals, targets = relevance.reshape(len(TARGETS), -1).sum(axis=1), scores[range(len(TARGETS)), TARGETS]
    np.testing.assert_allclose(totals, targets, rtol=1e-4)


def _z_plus_formula(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Zennit's ZPlus for y = x·W + b, written as matrices: x⁺ through W⁺ with b⁺, x⁻ through W⁻ without bias."""
    x_pos, x_neg = np.maximum(x, 0), np.minimum(x, 0)
    w_pos, w_neg = np.maximum(weight, 0), np.minimum(weight, 0)
    z = x_pos @ w_pos + np.maximum(bias, 0) + x_neg @ w_neg
    share = relevance / (z + 1e-6 * np.where(z >= 0, 1.0, -1.0))
    return x_pos * (share @ w_pos.T) + x_neg * (share @ w_neg.T)


DENSE_LAYERS = {
    # Gemm's alpha and beta belong to the layer's weight and bias.
    "gemm_alpha_beta": (
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], alpha=0.5, beta=2.0)],
        lambda weight, bias: (0.5 * weight, 2.0 * bias),
    ),
    # MatMul + Add(bias) is one layer with its bias in z once the canonizer has merged them.
    "matmul_add": (
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Add", ["z", "b"], ["y"])],
        lambda weight, bias: (weight, bias),
    ),
}


@pytest.mark.parametrize("case", list(DENSE_LAYERS))
def test_dense_layer_against_the_matrix_formula(case: str) -> None:
    nodes, effective = DENSE_LAYERS[case]
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    weight, bias = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    relevance = rng.standard_normal((3, 4)).astype(np.float32)
    model = _graph_model(nodes, {"x": x.shape}, {"w": weight, "b": bias})
    (ours,) = onnx_vjp(model, {"x": x}, relevance, ["x"], ruleset=get_ruleset("lrp", composite="z_plus"))
    expected = _z_plus_formula(x.astype(np.float64), *effective(weight.astype(np.float64), bias), relevance)
    assert_relative_close(ours, expected)


@pytest.mark.parametrize("after_relu", [False, True])
def test_z_plus_runs_the_negative_half_only_for_inputs_that_can_be_negative(after_relu: bool) -> None:
    """After a ReLU, x⁻ = 0: the rule leaves out the layer's forward and VJP through W⁻ (3 Gemm nodes in all instead of
    5) and still gives the formula's relevance, which the ReLU passes on unchanged. z⁺'s z is never negative, so its
    stabiliser needs no sign select (Where) either way."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    weight, bias = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    relevance = rng.standard_normal((3, 4)).astype(np.float32)
    layer = helper.make_node("Gemm", ["a" if after_relu else "x", "w", "b"], ["y"])
    nodes = [helper.make_node("Relu", ["x"], ["a"]), layer] if after_relu else [layer]
    ruleset = get_ruleset("lrp", composite="z_plus")
    model = _graph_model(nodes, {"x": x.shape}, {"w": weight, "b": bias})
    (ours,) = onnx_vjp(model, {"x": x}, relevance, ["x"], ruleset=ruleset)
    layer_input = np.maximum(x, 0) if after_relu else x
    assert_relative_close(ours, _z_plus_formula(layer_input.astype(np.float64), weight, bias, relevance))
    backward = differentiate(_graph_model(nodes, {"x": x.shape}, {"w": weight, "b": bias}), "y", ["x"], ruleset=ruleset)
    ops = [node.op_type for node in backward.model.graph.node]
    assert ops.count("Gemm") == (3 if after_relu else 5)
    assert "Where" not in ops


# The canonizers, on small graphs: the forward output must not change.


def _graph_model(nodes: list, inputs: dict[str, tuple], initializers: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "canonize",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _batch_norm(channels: int, rng: np.random.Generator, **attrs) -> tuple[onnx.NodeProto, dict[str, np.ndarray]]:
    stats = {
        "gain": rng.uniform(0.5, 1.5, channels),
        "shift": rng.uniform(-0.5, 0.5, channels),
        "mean": rng.uniform(-0.5, 0.5, channels),
        "var": rng.uniform(0.5, 2.0, channels),
    }
    return helper.make_node("BatchNormalization", ["z", *stats], ["y"], **attrs), stats


FOLDABLE = {
    "conv": (
        {"x": (2, 3, 6, 6)},
        lambda rng: {"w": rng.standard_normal((4, 3, 3, 3)), "b": rng.standard_normal(4)},
        helper.make_node("Conv", ["x", "w", "b"], ["z"], pads=[1, 1, 1, 1]),
        4,
    ),
    "conv_without_bias": (
        {"x": (2, 3, 6, 6)},
        lambda rng: {"w": rng.standard_normal((4, 3, 3, 3))},
        helper.make_node("Conv", ["x", "w"], ["z"], strides=[2, 2]),
        4,
    ),
    "conv_transpose_groups": (
        {"x": (2, 4, 5, 5)},
        lambda rng: {"w": rng.standard_normal((4, 3, 3, 3)), "b": rng.standard_normal(6)},
        helper.make_node("ConvTranspose", ["x", "w", "b"], ["z"], group=2, strides=[2, 2]),
        6,
    ),
    "gemm_trans_b_alpha_beta": (
        {"x": (3, 5)},
        lambda rng: {"w": rng.standard_normal((4, 5)), "b": rng.standard_normal((1, 4))},
        helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1, alpha=0.5, beta=2.0),
        4,
    ),
    "gemm_without_bias": (
        {"x": (3, 5)},
        lambda rng: {"w": rng.standard_normal((5, 4))},
        helper.make_node("Gemm", ["x", "w"], ["z"]),
        4,
    ),
}


@pytest.mark.parametrize("case", list(FOLDABLE))
def test_fold_batch_norms(case: str) -> None:
    inputs, weights, layer, channels = FOLDABLE[case]
    rng = np.random.default_rng(1)
    norm, stats = _batch_norm(channels, rng, epsilon=1e-3)
    model = _graph_model([layer, norm], inputs, {**weights(rng), **stats})
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in inputs.items()}
    expected = _run(model, feeds)
    fold_batch_norms(model)
    assert [node.op_type for node in model.graph.node] == [layer.op_type]
    assert not {"gain", "shift", "mean", "var", "w"} & {init.name for init in model.graph.initializer}
    np.testing.assert_allclose(_run(model, feeds), expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_stays_when_the_layer_output_has_other_readers() -> None:
    rng = np.random.default_rng(2)
    norm, stats = _batch_norm(4, rng)
    conv = helper.make_node("Conv", ["x", "w"], ["z"])
    model = _graph_model(
        [conv, norm, helper.make_node("Add", ["y", "z"], ["out"])],
        {"x": (1, 3, 4, 4)},
        {"w": rng.standard_normal((4, 3, 1, 1)), **stats},
    )
    before = model.SerializeToString()
    fold_batch_norms(model)
    assert model.SerializeToString() == before


@pytest.mark.parametrize("bias_first", [False, True])
def test_merge_matmul_bias(bias_first: bool) -> None:
    rng = np.random.default_rng(3)
    operands = ["b", "z"] if bias_first else ["z", "b"]
    model = _graph_model(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Add", operands, ["y"])],
        {"x": (3, 5)},
        {"w": rng.standard_normal((5, 4)), "b": rng.standard_normal((1, 4))},
    )
    feeds = {"x": rng.standard_normal((3, 5)).astype(np.float32)}
    expected = _run(model, feeds)
    merge_matmul_bias(model)
    assert [node.op_type for node in model.graph.node] == ["Gemm"]
    np.testing.assert_allclose(_run(model, feeds), expected, rtol=1e-5, atol=1e-5)


def test_matmul_of_a_sequence_keeps_its_add() -> None:
    """Gemm is 2-D only: a MatMul over tokens [N, T, D] stays as it is."""
    rng = np.random.default_rng(4)
    model = _graph_model(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Add", ["z", "b"], ["y"])],
        {"x": (2, 3, 5)},
        {"w": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)},
    )
    merge_matmul_bias(model)
    assert [node.op_type for node in model.graph.node] == ["MatMul", "Add"]


def test_resolve_constant_aliases() -> None:
    rng = np.random.default_rng(5)
    model = _graph_model(
        [helper.make_node("Identity", ["w"], ["w_alias"]), helper.make_node("Conv", ["x", "w_alias"], ["y"])],
        {"x": (1, 3, 4, 4)},
        {"w": rng.standard_normal((2, 3, 3, 3))},
    )
    feeds = {"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}
    expected = _run(model, feeds)
    resolve_constant_aliases(model)
    assert [(node.op_type, list(node.input)) for node in model.graph.node] == [("Conv", ["x", "w"])]
    np.testing.assert_allclose(_run(model, feeds), expected, rtol=1e-6)


# The factory.


def test_ruleset_names_key_the_graph_structure_and_inputs_carry_the_values() -> None:
    default = get_ruleset("lrp", composite="epsilon_plus")
    assert default.relevance
    # Values are graph inputs: one rule set (one graph) for every epsilon.
    assert default == get_ruleset("lrp", composite="epsilon_plus", epsilon=1e-3)
    assert default.inputs == {"onnxplain_param/lrp_epsilon": np.float32(1e-6)}
    box = get_ruleset("lrp", composite="epsilon_gamma_box", low=-1, high=[1, 2, 3], gamma=0.1)
    assert box.name == "lrp(epsilon_gamma_box,high=(3,),low=())"
    np.testing.assert_array_equal(box.inputs["onnxplain_param/lrp_high"], np.float32([1, 2, 3]))
    assert box.inputs["onnxplain_param/lrp_gamma"] == np.float32(0.1)
    # What shapes the graph stays in the name: bounds given or not and their shape, beta = 0 (z⁺) or not.
    assert box != get_ruleset("lrp", composite="epsilon_gamma_box", low=-1, high=3, gamma=0.1)
    assert get_ruleset("lrp", composite="deep_taylor").name == "lrp(deep_taylor,high=None,low=None)"
    assert get_ruleset("lrp", composite="alpha_beta", alpha=1, beta=0).name == "lrp(alpha_beta,beta=0)"
    assert get_ruleset("lrp", composite="alpha_beta", alpha=3, beta=2).name == "lrp(alpha_beta,beta>0)"
    assert "epsilon_plus_flat" in COMPOSITE_NAMES


# A graph built for the first parameters, fed the second's values (the ZENNIT case they must then match).
REUSED = {
    "epsilon": ({"epsilon": 1e-6}, "epsilon_plus_eps0.1"),
    "gamma_box": ({"low": (-1.0, -1.0, -1.0), "high": (1.0, 1.0, 1.0), "gamma": 0.1}, "epsilon_gamma_box"),
    "alpha_beta": ({"alpha": 2.0, "beta": 1.0}, "alpha3_beta2"),
    "box": ({"low": (-1.0, -1.0, -1.0), "high": (1.0, 1.0, 1.0)}, "deep_taylor_box"),
}


@pytest.mark.parametrize("case", list(REUSED))
def test_one_graph_serves_every_parameter_value(case: str) -> None:
    """The graph reads its numbers from inputs: built for one epsilon (gamma, alpha-beta, bounds) and fed another's,
    it gives Zennit's relevance for the value fed."""
    built_for, fed_case = REUSED[case]
    composite, params, zennit_composite = ZENNIT[fed_case]
    built_ruleset, fed_ruleset = (get_ruleset("lrp", composite=composite, **p) for p in (built_for, params))
    assert built_ruleset == fed_ruleset
    module = _seeded(VGGBatchNorm())
    x, seed = _inputs()
    built = differentiate(_export(module), "scores", ["input"], ruleset=built_ruleset)
    assert set(built.parameters) == set(fed_ruleset.inputs)
    session = ort.InferenceSession(built.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"input": x, built.seed_input: seed, **fed_ruleset.inputs}
    (ours,) = session.run([built.gradients["input"]], feeds)
    reference = _zennit_relevance(module, zennit_composite([zcanonizers.SequentialMergeBatchNorm()]), x, seed)
    assert_relative_close(ours, reference)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"composite": "epsilon_omega"}, "unknown LRP composite 'epsilon_omega'"),
        ({"composite": "epsilon_plus", "gamma": 0.3}, "takes epsilon; not gamma"),
        ({"composite": "alpha_beta", "alpha": 2, "beta": 2}, "alpha - beta must be 1"),
        ({"composite": "epsilon_gamma_box", "low": 0}, "needs high"),
        ({"composite": "epsilon_gamma_box", "low": 1, "high": 0}, "low < high"),
        ({"composite": "deep_taylor", "low": [0, 0], "high": [1, 1, 1]}, "differ in length"),
        ({"composite": "epsilon", "epsilon": -1}, "epsilon must be"),
        ({"composite": "epsilon_gamma_box", "low": "dark", "high": 1}, "one number per channel"),
    ],
)
def test_bad_parameters(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_ruleset("lrp", **params)
