"""Weighted layers of exported and hand-built graphs, top-down, and randomised copies of them: which tensors are
redrawn, from which distribution, and that the copy still runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support.models import IR_VERSION, export

from onnxplain.server.engine.randomize import WeightedLayer, randomize_layers, weighted_layers

IMAGE_SHAPE = (1, 3, 8, 8)


class ConvBnNet(torch.nn.Module):
    """Conv-BN-ReLU-Conv-MaxPool-Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16 * 4 * 4, 5)
        with torch.no_grad():  # statistics of a trained model (fresh ones equal the affine defaults: exported shared)
            for tensor in (self.bn.weight, self.bn.bias, self.bn.running_mean, self.bn.running_var):
                tensor.copy_(torch.rand(8) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.nn.functional.max_pool2d(self.conv2(x), 2)
        return self.fc(x.flatten(1))


# (op type, shapes of the learned tensors) per layer, top-down.
CONV_BN_LAYERS = [("Gemm", [(5, 256), (5,)]), ("Conv", [(16, 8, 3, 3), (16,)]), ("Conv", [(8, 3, 3, 3), (8,)])]


def stored(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every stored tensor by the name nodes read it under: initializers and Constant values."""
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return tensors


def layer_shapes(model: onnx.ModelProto, layers: list[WeightedLayer]) -> list[tuple[str, list[tuple[int, ...]]]]:
    tensors = stored(model)
    return [(layer.op_type, [tensors[name].shape for name in layer.tensors]) for layer in layers]


def run(model: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


@pytest.fixture(scope="module")
def legacy() -> onnx.ModelProto:
    return onnx.load_from_string(export(ConvBnNet(), IMAGE_SHAPE, keep_batch_norm=True))


def test_legacy_export_layers_top_down_without_batch_norm(legacy) -> None:
    layers = weighted_layers(legacy)
    assert [layer.name for layer in layers] == ["/fc/Gemm", "/conv2/Conv", "/conv1/Conv"]
    assert layer_shapes(legacy, layers) == CONV_BN_LAYERS
    assert layers[0].tensors == ("fc.weight", "fc.bias")
    assert "BatchNormalization" in {node.op_type for node in legacy.graph.node}


def test_dynamo_export_layers_top_down() -> None:
    model = onnx.load_from_string(export(ConvBnNet(), IMAGE_SHAPE, dynamo=True))
    layers = weighted_layers(model)
    assert layer_shapes(model, layers) == CONV_BN_LAYERS  # the int64 shape of its Reshape is no weight
    weighted = [node.name for node in model.graph.node if node.op_type in ("Conv", "Gemm")]
    assert [layer.name for layer in layers] == weighted[::-1]


def hand_built(dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """x (N, 3, 4) → MatMul with a Constant-node weight (unnamed) → Add of a constant bias → self-attention-like
    MatMul of two activations → Reshape (int64 shape) → Gemm "fc" (its 1-element bias is no weight) → MatMul "head"
    and MatMul "head2", which share one weight."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    rng = np.random.default_rng(0)

    def tensor(name: str, values: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(values.astype(np_dtype), name)

    constant = helper.make_node("Constant", [], ["w_const"], value=tensor("", rng.normal(size=(4, 4))))
    nodes = [
        constant,
        helper.make_node("MatMul", ["x", "w_const"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Transpose", ["hb"], ["ht"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["hb", "ht"], ["attention"]),
        helper.make_node("Reshape", ["attention", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w_fc", "c_fc"], ["fc_out"], name="fc"),
        helper.make_node("MatMul", ["fc_out", "w_head"], ["head_out"], name="head"),
        helper.make_node("MatMul", ["head_out", "w_head"], ["scores"], name="head2"),
    ]
    initializers = [
        tensor("b", np.full(4, 0.25)),
        numpy_helper.from_array(np.array([0, 9], np.int64), "shape"),
        tensor("w_fc", rng.normal(size=(9, 6))),
        tensor("c_fc", np.array([0.5])),
        tensor("w_head", rng.normal(size=(6, 6))),
    ]
    graph = helper.make_graph(
        nodes,
        "hand_built",
        [helper.make_tensor_value_info("x", dtype, ["batch", 3, 4])],
        [helper.make_tensor_value_info("scores", dtype, ["batch", 6])],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)


def test_hand_built_layers() -> None:
    assert weighted_layers(hand_built()) == [
        WeightedLayer("head2", "MatMul", ("w_head",)),
        WeightedLayer("fc", "Gemm", ("w_fc",)),
        WeightedLayer("MatMul #0", "MatMul", ("w_const", "b")),
    ]


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.DOUBLE], ids=["float32", "float64"])
def test_randomize_redraws_listed_tensors_only(dtype) -> None:
    model = hand_built(dtype)
    before = onnx.ModelProto()
    before.CopyFrom(model)
    layers = weighted_layers(model)
    randomized = randomize_layers(model, layers[1:], np.random.default_rng(5))
    assert model == before  # the original is left alone
    original, redrawn = stored(model), stored(randomized)
    # The same generator, drawing in the order of the layers and their tensors; a constant tensor (b) draws nothing.
    rng = np.random.default_rng(5)
    for name in ("w_fc", "w_const"):
        values = original[name].astype(np.float64)
        expected = rng.normal(values.mean(), values.std(), size=values.shape).astype(original[name].dtype)
        np.testing.assert_array_equal(redrawn[name], expected)
        assert redrawn[name].dtype == original[name].dtype
    for name in ("w_head", "b", "c_fc", "shape"):
        assert redrawn[name].tobytes() == original[name].tobytes()
        assert redrawn[name].dtype == original[name].dtype
    inputs = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(helper.tensor_dtype_to_np_dtype(dtype))
    scores, randomized_scores = run(model, inputs), run(randomized, inputs)
    assert randomized_scores.shape == scores.shape and np.isfinite(randomized_scores).all()
    assert not np.allclose(randomized_scores, scores)


def test_randomized_weights_keep_mean_and_spread(legacy) -> None:
    layers = weighted_layers(legacy)
    randomized = randomize_layers(legacy, layers, np.random.default_rng(0))
    original, redrawn = stored(legacy), stored(randomized)
    for name in (name for layer in layers for name in layer.tensors):
        old, new = original[name].astype(np.float64), redrawn[name].astype(np.float64)
        assert new.shape == old.shape and redrawn[name].dtype == original[name].dtype
        assert np.abs(new - old).min() > 0  # every value redrawn
        assert abs(new.mean() - old.mean()) < 5 * old.std() / np.sqrt(old.size)
        assert abs(new.std() / old.std() - 1) < 5 / np.sqrt(2 * old.size)
    batch_norm = [name for node in legacy.graph.node if node.op_type == "BatchNormalization" for name in node.input[1:]]
    for name in batch_norm:
        assert redrawn[name].tobytes() == original[name].tobytes()
    image = np.random.default_rng(2).normal(size=IMAGE_SHAPE).astype(np.float32)
    assert np.isfinite(run(randomized, image)).all()


def test_same_seed_same_copy(legacy) -> None:
    layers = weighted_layers(legacy)
    first = randomize_layers(legacy, layers, np.random.default_rng(42))
    again = randomize_layers(legacy, layers, np.random.default_rng(42))
    other = randomize_layers(legacy, layers, np.random.default_rng(43))
    assert first.SerializeToString() == again.SerializeToString()
    assert first.SerializeToString() != other.SerializeToString()


def test_external_data_must_be_loaded(legacy, tmp_path) -> None:
    path = tmp_path / "model.onnx"
    written = onnx.ModelProto()
    written.CopyFrom(legacy)  # saving with external data empties the tensors of the proto it is given
    onnx.save(written, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    layers = weighted_layers(onnx.load(str(path), load_external_data=False))
    assert layers == weighted_layers(legacy)
    loaded = onnx.load(str(path))
    randomized = randomize_layers(loaded, layers, np.random.default_rng(0))
    assert stored(randomized)["fc.weight"].tobytes() != stored(legacy)["fc.weight"].tobytes()
    with pytest.raises(ValueError, match="external"):
        randomize_layers(onnx.load(str(path), load_external_data=False), layers, np.random.default_rng(0))
