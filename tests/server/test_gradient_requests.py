"""Gradient methods on models they cannot run on, and bad gradient parameters: a clear status naming the cause,
model metadata saying so up front, and the server serving on."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from support.models import (
    IR_VERSION,
    SmallCNN,
    WithSoftmax,
    export,
    identity_classifier,
    mod_stem_cnn,
    write_model,
)
from support.servers import serving_client

from onnxplain.client import Client, OnnxplainError

# The MaxPool output of SmallCNN as the legacy exporter names it inside WithSoftmax.
EARLY_LAYER = "/inner/features/features.2/MaxPool_output_0"
GRADIENT_METHODS = ("gradient", "saliency", "integrated_gradients", "grad_cam", "lrp", "guided_backprop")


def wrapping_classifier() -> bytes:
    """scores = fmod(row means, 0.7): Mod has no VJP rule, so gradient methods cannot run; perturbation methods can."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["rows"], axes=[3], keepdims=0),
            helper.make_node("Mod", ["rows", "divisor"], ["wrapped"], name="the_wrap", fmod=1),
            helper.make_node("Flatten", ["wrapped"], ["scores"], axis=1),
        ],
        "wrap",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.asarray(0.7, dtype=np.float32), "divisor")],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION
    ).SerializeToString()


def root_classifier() -> bytes:
    """scores = sqrt(relu(row means)): at a zero image the gradient is 0 · inf = NaN, which no map may carry."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["rows"], axes=[3], keepdims=0),
            helper.make_node("Relu", ["rows"], ["positive"]),
            helper.make_node("Sqrt", ["positive"], ["roots"]),
            helper.make_node("Flatten", ["roots"], ["scores"], axis=1),
        ],
        "root",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION
    ).SerializeToString()


def lone_quantize_classifier() -> bytes:
    """A QuantizeLinear read by a Cast, not a DequantizeLinear: it has a rule, so the load-time scan passes, but the
    rule refuses it when the graph is built (the straight-through estimator is defined for Q/DQ pairs only)."""
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["quantized"], name="lone_quantize"),
            helper.make_node("Cast", ["quantized"], ["levels"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["levels"], ["rows"], axes=[3], keepdims=0),
            helper.make_node("Flatten", ["rows"], ["scores"], axis=1),
        ],
        "lone_quantize",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(np.asarray(0.05, dtype=np.float32), "scale"),
            numpy_helper.from_array(np.asarray(128, dtype=np.uint8), "zero"),
        ],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION
    ).SerializeToString()


@pytest.fixture(scope="module")
def cnn() -> SmallCNN:
    return SmallCNN(channels=3, classes=5, seed=2).eval()


@pytest.fixture(scope="module")
def client(tmp_path_factory, cnn) -> Iterator[Client]:
    repository = tmp_path_factory.mktemp("repository")
    write_model(repository, "wrap", wrapping_classifier())
    write_model(repository, "wrapped_stem", mod_stem_cnn(8).SerializeToString())
    write_model(repository, "root", root_classifier())
    write_model(repository, "lone_quantize", lone_quantize_classifier())
    write_model(repository, "rows", identity_classifier())
    write_model(repository, "softmax_cnn", export(WithSoftmax(cnn), (1, 3, 16, 16)))
    with serving_client(repository) as connected:
        yield connected


def failure(call) -> OnnxplainError:
    with pytest.raises(OnnxplainError) as caught:
        call()
    return caught.value


def test_metadata_names_the_op_without_a_rule(client) -> None:
    methods = {m.name: m for m in client.metadata("wrap").methods}
    for name in GRADIENT_METHODS:
        assert not methods[name].supported
        if name != "grad_cam":  # which has no feature map to start from: test_cam_without_a_feature_map...
            assert "Mod" in methods[name].reason and "the_wrap" in methods[name].reason, methods[name].reason
    assert methods["occlusion"].supported


def test_gradient_request_on_it_fails_with_failed_precondition(client) -> None:
    image = np.zeros((1, 4, 8), dtype=np.float32)
    error = failure(lambda: client.explain("wrap", image, method="saliency"))
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "Mod" in error.message
    # The same model still serves perturbation methods.
    assert client.explain("wrap", image, method="occlusion", window=2, stride=2).attribution.shape == (4, 8)


def test_support_is_decided_per_method_on_the_path_it_differentiates(client) -> None:
    methods = {m.name: m for m in client.metadata("wrapped_stem").methods}
    for name in ("gradient", "saliency", "integrated_gradients", "lrp", "guided_backprop", "guided_grad_cam"):
        assert not methods[name].supported, name
        assert "stem_wrap" in methods[name].reason
    for name in ("cam", "grad_cam", "grad_cam_pp", "score_cam"):
        assert methods[name].supported, methods[name].reason
        assert methods[name].reason.startswith("not yet checked")
    image = np.random.default_rng(4).normal(size=(3, 8, 8)).astype(np.float32)
    cam = client.explain("wrapped_stem", image, method="grad_cam", target=1).attribution
    assert cam.shape == (8, 8) and np.all(np.isfinite(cam))
    checked = {m.name: m for m in client.metadata("wrapped_stem").methods}["grad_cam"]
    assert checked.supported and checked.reason == ""
    error = failure(lambda: client.explain("wrapped_stem", image, method="saliency"))
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION and "stem_wrap" in error.message


def test_cam_without_a_feature_map_asks_for_a_layer(client) -> None:
    error = failure(lambda: client.explain("rows", np.zeros((1, 4, 8), np.float32), method="grad_cam"))
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "layer" in error.message
    # Gradients through the same model work: ReduceMean and Flatten have rules.
    gradient = client.explain("rows", np.ones((1, 4, 8), np.float32), method="gradient", target=2).attribution
    np.testing.assert_allclose(gradient, np.eye(4)[2][:, None].repeat(8, axis=1) / 8, atol=1e-7)


@pytest.mark.parametrize(
    ("method", "params", "fragment"),
    [
        ("integrated_gradients", {"steps": 0}, "steps"),
        ("integrated_gradients", {"quadrature": "simpson"}, "quadrature"),
        ("smoothgrad", {"noise": -1.0}, "noise"),
        ("lrp", {"composite": "mystery"}, "composite"),
        ("grad_cam", {"layer": "no_such_tensor"}, "no_such_tensor"),
        ("feature_visualization", {"decay": 1.5}, "decay"),
        ("feature_visualization", {"layer": EARLY_LAYER, "channel": 99}, "channel"),
        ("lrp", {"composite": "z_plus", "epsilon": 0.1}, "epsilon"),
        ("lrp", {"composite": "alpha_beta", "alpha": 3.0, "beta": 1.0}, "alpha - beta must be 1"),
    ],
)
def test_bad_gradient_parameters_are_invalid_arguments(client, method, params, fragment) -> None:
    image = np.zeros((3, 16, 16), dtype=np.float32)
    error = failure(lambda: client.explain("softmax_cnn", image, method=method, **params))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT, error.message
    assert fragment in error.message


def test_softmax_model_explains_logits_unless_probability_is_asked(client, cnn) -> None:
    image = np.random.default_rng(1).normal(size=(3, 16, 16)).astype(np.float32)
    inputs = torch.from_numpy(image)[None].requires_grad_()
    (logit_gradient,) = torch.autograd.grad(cnn(inputs)[0, 1], inputs)
    (probability_gradient,) = torch.autograd.grad(torch.softmax(cnn(inputs), 1)[0, 1], inputs)
    raw = client.explain("softmax_cnn", image, method="gradient", target=1, attribution_shape="input")
    probability = client.explain(
        "softmax_cnn", image, method="gradient", target=1, attribution_shape="input", score_space="probability"
    )
    np.testing.assert_allclose(
        raw.attribution, logit_gradient[0].numpy(), atol=1e-5 * float(logit_gradient.abs().max())
    )
    scale = float(probability_gradient.abs().max())
    np.testing.assert_allclose(probability.attribution, probability_gradient[0].numpy(), atol=1e-5 * scale)


def test_cam_refuses_a_head_that_is_not_pooling_and_dense(client) -> None:
    """softmax_cnn's last 4-D map before the head is the ReLU output, but naming the earlier MaxPool output puts a
    convolution between the layer and the pooling: CAM's formula does not hold there."""
    image = np.random.default_rng(2).normal(size=(3, 16, 16)).astype(np.float32)
    assert client.explain("softmax_cnn", image, method="cam").attribution.shape == (16, 16)
    error = failure(lambda: client.explain("softmax_cnn", image, method="cam", layer=EARLY_LAYER))
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION, error.message
    assert "grad_cam" in error.message
    # Grad-CAM is defined on that layer.
    assert client.explain("softmax_cnn", image, method="grad_cam", layer=EARLY_LAYER).attribution.shape == (16, 16)


def test_a_non_finite_map_is_an_internal_error_with_the_request_id(client) -> None:
    error = failure(lambda: client.explain("root", np.zeros((1, 4, 8), np.float32), method="gradient", target=0))
    assert error.code is grpc.StatusCode.INTERNAL
    assert "request id" in error.message
    # A finite case of the same model is answered.
    image = np.ones((1, 4, 8), np.float32)
    assert np.all(np.isfinite(client.explain("root", image, method="gradient", target=0).attribution))


def test_a_graph_the_build_refuses_turns_metadata_to_unsupported(client) -> None:
    before = {m.name: m for m in client.metadata("lone_quantize").methods}["saliency"]
    assert before.supported and before.reason.startswith("not yet checked")
    image = np.ones((1, 4, 8), np.float32)
    error = failure(lambda: client.explain("lone_quantize", image, method="saliency", target=0))
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "lone_quantize" in error.message
    after = {m.name: m for m in client.metadata("lone_quantize").methods}["saliency"]
    assert not after.supported and after.reason in error.message
    again = failure(lambda: client.explain("lone_quantize", image, method="saliency", target=0))
    assert again.code is grpc.StatusCode.FAILED_PRECONDITION and after.reason in again.message


@pytest.mark.parametrize("method", ["grad_cam", "score_cam", "feature_visualization"])
def test_a_layer_the_model_lacks_is_refused_from_the_graph_names(client, method) -> None:
    image = np.random.default_rng(2).normal(size=(3, 16, 16)).astype(np.float32)
    error = failure(lambda: client.explain("softmax_cnn", image, method=method, layer="no_such_tensor"))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT, error.message
    assert "no tensor named 'no_such_tensor'" in error.message
