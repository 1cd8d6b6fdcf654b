"""Which tensor gradient methods explain, and which feature map CAM methods read, on graph shapes exporters write."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxplain.server.engine.backward.prepare import infer_shapes
from onnxplain.server.engine.backward.targets import FeatureMap, default_feature_map, explained_tensor


def classifier(head: list[onnx.NodeProto], extra: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """x (N, 3, 8, 8) -> Conv (4 channels) -> Relu -> `head`, which ends in "scores"."""
    weights = {"w": np.ones((4, 3, 3, 3), np.float32), **(extra or {})}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["features"]),
        *head,
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feature_map(model: onnx.ModelProto) -> FeatureMap | None:
    model, shapes, _ = infer_shapes(model)
    return default_feature_map(model.graph, "scores", shapes)


DENSE = {"dense": np.ones((256, 5), np.float32)}


@pytest.mark.parametrize(
    ("head", "extra", "expected"),
    [
        (  # torchvision: global average pool, flatten, dense
            [
                helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
                helper.make_node("Flatten", ["pooled"], ["flat"]),
                helper.make_node("MatMul", ["flat", "head"], ["scores"]),
            ],
            {"head": np.ones((4, 5), np.float32)},
            FeatureMap("features", 1, (2, 3)),
        ),
        (  # tf2onnx / Keras: channels-last after a Transpose, mean over axes 1 and 2
            [
                helper.make_node("Transpose", ["features"], ["nhwc"], perm=[0, 2, 3, 1]),
                helper.make_node("ReduceMean", ["nhwc"], ["pooled"], axes=[1, 2], keepdims=0),
                helper.make_node("MatMul", ["pooled", "head"], ["scores"]),
            ],
            {"head": np.ones((4, 5), np.float32)},
            FeatureMap("nhwc", 3, (1, 2)),
        ),
        (  # Keras VGG: channels-last, flattened by a Reshape, dense
            [
                helper.make_node("Transpose", ["features"], ["nhwc"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", ["nhwc", "flat_shape"], ["flat"]),
                helper.make_node("MatMul", ["flat", "dense"], ["scores"]),
            ],
            {"flat_shape": np.array([-1, 256], np.int64), **DENSE},
            FeatureMap("nhwc", 3, (1, 2)),
        ),
        (  # torch VGG: Flatten straight on the channels-first map
            [
                helper.make_node("Flatten", ["features"], ["flat"]),
                helper.make_node("MatMul", ["flat", "dense"], ["scores"]),
            ],
            DENSE,
            FeatureMap("features", 1, (2, 3)),
        ),
    ],
)
def test_default_feature_map_is_the_last_map_before_the_head(head, extra, expected) -> None:
    assert feature_map(classifier(head, extra)) == expected


def test_a_map_already_pooled_to_one_pixel_is_not_taken() -> None:
    head = [
        helper.make_node("MaxPool", ["features"], ["pooled"], kernel_shape=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "head"], ["scores"]),
    ]
    # The Flatten reads a 1x1 map; the whole-map MaxPool before it is what gives the feature map.
    assert feature_map(classifier(head, {"head": np.ones((4, 5), np.float32)})) == FeatureMap("features", 1, (2, 3))


def test_a_pooled_map_turned_back_to_channels_first_is_not_taken() -> None:
    """ConvNeXt's head: global average pool, a channels-last LayerNorm between two Transposes, Flatten, dense. The
    Flatten reads a 1x1 map in channels-first order; the map is the pool's input."""
    head = [
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Transpose", ["pooled"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["nhwc", "gamma", "beta"], ["normalised"], axis=-1),
        helper.make_node("Transpose", ["normalised"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Flatten", ["nchw"], ["flat"]),
        helper.make_node("MatMul", ["flat", "head"], ["scores"]),
    ]
    extra = {"gamma": np.ones(4, np.float32), "beta": np.zeros(4, np.float32), "head": np.ones((4, 5), np.float32)}
    assert feature_map(classifier(head, extra)) == FeatureMap("features", 1, (2, 3))


def test_a_flattened_tensor_whose_batch_axis_moved_is_no_feature_map() -> None:
    """An attention's heads: a Transpose moves the batch axis, and a Reshape flattens the result to 2-D."""
    head = [
        helper.make_node("Transpose", ["features"], ["heads"], perm=[2, 0, 1, 3]),
        helper.make_node("Reshape", ["heads", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "dense"], ["scores"]),
    ]
    extra = {"flat_shape": np.array([-1, 32], np.int64), "dense": np.ones((32, 5), np.float32)}
    assert feature_map(classifier(head, extra)) is None


@pytest.mark.parametrize("activation", ["Softmax", "LogSoftmax", "Sigmoid"])
def test_trailing_activation_is_skipped_unless_probability_is_asked(activation: str) -> None:
    head = [
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"]),
        helper.make_node(activation, ["logits"], ["scores"]),
    ]
    assert explained_tensor(classifier(head), "scores", probability=False) == "logits"
    probability = explained_tensor(classifier(head), "scores", probability=True)
    assert probability == ("scores" if activation != "LogSoftmax" else "onnxplain_probability")
