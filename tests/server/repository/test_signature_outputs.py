"""Which output holds the class scores, and its shape where the graph does not declare it (stripped models)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxplain.server.repository.signature import SignatureError, read_signature

FEATURES = 3 * 4 * 4


def heads_model(heads: list[tuple[str, int, str | None]], *, declared: list | None = None) -> onnx.ModelProto:
    """x (N, 3, 4, 4) -> Flatten -> one MatMul head per (name, width, activation or None), outputs in that order;
    `declared` overrides the declared output shapes (None: no shape at all)."""
    nodes = [helper.make_node("Flatten", ["x"], ["features"])]
    weights, outputs = [], []
    for index, (name, width, activation) in enumerate(heads):
        weight = np.random.default_rng(index).normal(size=(FEATURES, width)).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w_{name}"))
        linear = f"{name}_linear" if activation else name
        nodes.append(helper.make_node("MatMul", ["features", f"w_{name}"], [linear]))
        if activation:
            nodes.append(
                helper.make_node(activation, [linear], [name], **({"axis": 1} if "Softmax" in activation else {}))
            )
        shape = ["N", width] if declared is None else declared[index]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])], outputs, weights
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_a_face_model_gets_its_softmax_scores_not_its_box_regressor() -> None:
    model = heads_model([("boxes", 4, None), ("landmarks", 10, None), ("scores", 2, "Softmax")])
    signature = read_signature(model)
    assert (signature.output.name, signature.num_classes, signature.final_activation) == ("scores", 2, "Softmax")
    assert [o.name for o in signature.outputs] == ["boxes", "landmarks", "scores"]


@pytest.mark.parametrize("activation", ["Sigmoid", "LogSoftmax"])
def test_other_score_activations_are_evidence_too(activation: str) -> None:
    assert read_signature(heads_model([("offsets", 4, None), ("probs", 6, activation)])).output.name == "probs"


def test_plain_heads_are_refused_naming_them_and_the_config_key() -> None:
    with pytest.raises(SignatureError) as refused:
        read_signature(heads_model([("head_a", 4, None), ("head_b", 7, None)]))
    message = str(refused.value)
    assert "'head_a' (?, 4)" in message and "'head_b' (?, 7)" in message
    assert "none of them" in message and "output: {name: <output>}" in message


def test_several_score_like_outputs_are_refused_as_ambiguous() -> None:
    with pytest.raises(SignatureError, match=r"2 of them \('a', 'b'\) look like class scores"):
        read_signature(heads_model([("a", 4, "Sigmoid"), ("b", 3, "Softmax")]))


def test_the_config_picks_among_plain_heads() -> None:
    signature = read_signature(heads_model([("head_a", 4, None), ("head_b", 7, None)]), output_name="head_b")
    assert (signature.output.name, signature.num_classes) == ("head_b", 7)


def test_a_single_plain_output_is_taken_as_today() -> None:
    assert read_signature(heads_model([("logits", 5, None)])).output.name == "logits"


@pytest.mark.parametrize("declared", [[], None], ids=["rank-0", "missing"])
def test_a_stripped_output_shape_is_inferred(declared) -> None:
    signature = read_signature(heads_model([("logits", 5, None)], declared=[declared]))
    assert signature.output.shape == (None, 5) and signature.num_classes == 5


def stripped_gelu_model() -> onnx.ModelProto:
    """An output made by an op ONNX's shape inference does not know (ONNX Runtime's Gelu), declared with rank 0."""
    weight = numpy_helper.from_array(np.ones((FEATURES, 5), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["features"]),
            helper.make_node("MatMul", ["features", "w"], ["linear"]),
            helper.make_node("Gelu", ["linear"], ["scores"], domain="com.microsoft"),
        ],
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [])],
        [weight],
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_an_output_shape_nothing_can_infer_is_left_for_the_probe_run() -> None:
    signature = read_signature(stripped_gelu_model())
    assert signature.output.shape == () and signature.num_classes is None
    probed = signature.with_output_shape((1, 5))
    assert probed.output.shape == (None, 5) and probed.num_classes == 5
    assert probed.outputs == (probed.output,)


def test_a_probe_that_finds_no_class_scores_refuses_the_model() -> None:
    signature = read_signature(stripped_gelu_model())
    with pytest.raises(SignatureError, match=r"shape \(\?, 6, 2\); a classifier outputs"):
        signature.with_output_shape((1, 6, 2))


def test_a_single_class_output_has_one_class() -> None:
    assert read_signature(heads_model([("logit", 1, "Sigmoid")])).num_classes == 1
