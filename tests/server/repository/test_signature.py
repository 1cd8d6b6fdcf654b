"""What the server reads from a graph with no config: the image input, layout, classes, final activation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support.models import ChannelsLast, SmallCNN, WithSoftmax, export

from onnxplain.server.repository.signature import SignatureError, infer_layout, read_signature


def test_torch_export_is_nchw_logits_with_dynamic_batch() -> None:
    signature = read_signature(onnx.load_from_string(export(SmallCNN(classes=7), (1, 3, 12, 10))))
    assert signature.layout == "NCHW"
    assert signature.input.shape == (None, 3, 12, 10)
    assert signature.input.dim_names[0] == "batch"
    assert (signature.channels, signature.spatial_size, signature.num_classes) == (3, (12, 10), 7)
    assert signature.fixed_batch is None
    assert signature.final_activation is None
    assert signature.activation_ratio > 1


def test_channels_last_input_is_nhwc() -> None:
    signature = read_signature(onnx.load_from_string(export(ChannelsLast(SmallCNN()), (1, 12, 10, 3))))
    assert signature.layout == "NHWC"
    assert (signature.channels, signature.spatial_size) == (3, (12, 10))


def test_softmax_ending_is_found_through_pass_through_ops() -> None:
    signature = read_signature(onnx.load_from_string(export(WithSoftmax(SmallCNN()), (1, 3, 8, 8))))
    assert signature.final_activation == "Softmax"


def test_fixed_batch_is_reported() -> None:
    signature = read_signature(onnx.load_from_string(export(SmallCNN(), (1, 3, 8, 8), dynamic_batch=False)))
    assert signature.fixed_batch == 1


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((None, 3, 224, 224), "NCHW"),
        ((None, 224, 224, 3), "NHWC"),
        ((1, 1, 28, 28), "NCHW"),
        ((None, 28, 28, 1), "NHWC"),
        ((None, None, None, None), "NCHW"),
        ((None, 3, 5, 3), "NCHW"),
    ],
)
def test_layout_follows_the_colour_axis(shape, layout) -> None:
    assert infer_layout(shape) == layout


def _graph_model(inputs, outputs, nodes) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_two_inputs_are_refused() -> None:
    model = _graph_model(
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 4, 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_node("Add", ["a", "b"], ["y"])],
    )
    with pytest.raises(SignatureError, match="2 inputs"):
        read_signature(model)


def test_non_classifier_output_is_refused() -> None:
    model = _graph_model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_node("Relu", ["x"], ["y"])],
    )
    with pytest.raises(SignatureError, match="a classifier outputs"):
        read_signature(model)


def test_integer_input_is_read_with_its_type() -> None:
    model = _graph_model(
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48])],
        [helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT), helper.make_node("Flatten", ["c"], ["y"])],
    )
    signature = read_signature(model)
    assert signature.input.is_integer and signature.input.numpy_dtype == np.uint8


def test_boolean_input_is_refused() -> None:
    model = _graph_model(
        [helper.make_tensor_value_info("x", TensorProto.BOOL, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48])],
        [helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT), helper.make_node("Flatten", ["c"], ["y"])],
    )
    with pytest.raises(SignatureError, match="float or integer image input"):
        read_signature(model)
