"""Third-party models as they come, through one real server: outputs stripped of their shape, several outputs (a face
model's box and landmark regressors beside its class scores), and uint8 inputs with the preprocessing in the graph."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper, numpy_helper
from support.models import IR_VERSION, write_model
from support.servers import start_server
from tritonclient.grpc import service_pb2, service_pb2_grpc

from onnxplain.client import Client, OnnxplainError

SIZE = 16
FEATURES = 3 * 4 * 4
UINT8_CLASSES = 4
MEAN, STD = (123.7, 116.3, 103.5), (58.4, 57.1, 57.4)


@dataclass
class Repo:
    client: Client
    target: str
    files: dict[str, Path]


def _model(nodes, inputs, outputs, weights, *, microsoft: bool = False) -> bytes:
    graph = helper.make_graph(nodes, "model", inputs, outputs, weights)
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid("com.microsoft", 1)] if microsoft else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION).SerializeToString()


def _weight(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).normal(0, 0.5, shape).astype(np.float32), name)


def heads_model(heads: list[tuple[str, int, bool]]) -> bytes:
    """x (N, 3, 4, 4) -> Flatten -> one MatMul head per (name, width, ends in Softmax), outputs in that order."""
    nodes = [helper.make_node("Flatten", ["x"], ["features"])]
    weights, outputs = [], []
    for seed, (name, width, softmax) in enumerate(heads):
        weights.append(_weight(f"w_{name}", (FEATURES, width), seed))
        linear = f"{name}_linear" if softmax else name
        nodes.append(helper.make_node("MatMul", ["features", f"w_{name}"], [linear]))
        if softmax:
            nodes.append(helper.make_node("Softmax", [linear], [name], axis=1))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", width]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])]
    return _model(nodes, inputs, outputs, weights)


def stripped_model(spatial: tuple[int | str, int | str]) -> bytes:
    """Scores made by an op ONNX's shape inference does not know (ONNX Runtime's Gelu), declared with rank 0, as
    stripping tools leave them: only a run can tell their shape."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["linear"]),
        helper.make_node("Gelu", ["linear"], ["scores"], domain="com.microsoft"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, *spatial])]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [])]
    return _model(nodes, inputs, outputs, [_weight("w", (3, 6), 0)], microsoft=True)


def uint8_model() -> bytes:
    """uint8 NHWC pixels -> Cast -> Transpose -> Sub mean -> Div std -> Conv-ReLU-Conv-ReLU-GAP-Gemm -> Softmax."""
    nodes = [
        helper.make_node("Cast", ["pixels"], ["floats"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["floats"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["nchw", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalised"]),
        helper.make_node("Conv", ["normalised", "conv1", "bias1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2", "bias2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fc_bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    weights = [
        numpy_helper.from_array(np.array(MEAN, np.float32).reshape(1, 3, 1, 1), "mean"),
        numpy_helper.from_array(np.array(STD, np.float32).reshape(1, 3, 1, 1), "std"),
        _weight("conv1", (8, 3, 3, 3), 1),
        _weight("bias1", (8,), 2),
        _weight("conv2", (8, 8, 3, 3), 3),
        _weight("bias2", (8,), 4),
        _weight("fc", (UINT8_CLASSES, 8), 5),
        _weight("fc_bias", (UINT8_CLASSES,), 6),
    ]
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", SIZE, SIZE, 3])]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", UINT8_CLASSES])]
    return _model(nodes, inputs, outputs, weights)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = tmp_path_factory.mktemp("repository")
    two_heads = heads_model([("head_a", 4, False), ("head_b", 7, False)])
    files = {
        "face": write_model(
            root, "face", heads_model([("boxes", 4, False), ("landmarks", 10, False), ("scores", 2, True)])
        ),
        "two_heads": write_model(root, "two_heads", two_heads),
        "head_b": write_model(root, "head_b", two_heads, {"output": {"name": "head_b"}}),
        "stripped": write_model(root, "stripped", stripped_model((8, 8))),
        "stripped_sized": write_model(
            root, "stripped_sized", stripped_model(("height", "width")), {"preprocessing": {"resize": [8, 8]}}
        ),
        "stripped_unsized": write_model(root, "stripped_unsized", stripped_model(("height", "width"))),
        "pixels": write_model(root, "pixels", uint8_model(), {"preprocessing": {"resize": [SIZE, SIZE]}}),
        "pixels_raw": write_model(root, "pixels_raw", uint8_model()),
        "pixels_normalised_twice": write_model(
            root,
            "pixels_normalised_twice",
            uint8_model(),
            {"preprocessing": {"resize": [SIZE, SIZE], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
        ),
    }
    server = start_server(root)
    try:
        with Client(server.target, timeout=60) as client:
            yield Repo(client, server.target, files)
    finally:
        assert server.stop() == 0, "".join(server.output)


def direct(model: Path, batch: np.ndarray, output: str | None = None) -> np.ndarray:
    """ONNX Runtime on the file with the server's thread count (1 in the tests), so reductions run in one order."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return session.run([output] if output else None, {session.get_inputs()[0].name: batch})[0]


def refused(call, code: grpc.StatusCode, *fragments: str) -> None:
    with pytest.raises(OnnxplainError) as caught:
        call()
    assert caught.value.code is code, caught.value.message
    for fragment in fragments:
        assert fragment in caught.value.message, f"{fragment!r} not in {caught.value.message!r}"


def unavailable_reason(repo: Repo, name: str) -> str:
    status = next(s for s in repo.client.models() if s.name == name)
    assert status.state == "unavailable"
    return status.reason


def rgb_pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


# ---- several outputs ------------------------------------------------------------------------------------------------


def test_a_face_model_is_explained_on_its_softmax_scores_not_its_box_regressor(repo: Repo) -> None:
    metadata = repo.client.metadata("face")
    assert (metadata.state, metadata.num_classes, metadata.output_kind) == ("ready", 2, "probabilities")
    assert [o.name for o in metadata.outputs] == ["boxes", "landmarks", "scores"]
    image = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
    scores = repo.client.predict("face", image).scores
    np.testing.assert_allclose(scores, direct(repo.files["face"], image[None], "scores")[0], rtol=0, atol=1e-6)


def test_plain_heads_are_unavailable_naming_them_and_the_config_key(repo: Repo) -> None:
    reason = unavailable_reason(repo, "two_heads")
    for fragment in ("'head_a' (?, 4)", "'head_b' (?, 7)", "output: {name: <output>}"):
        assert fragment in reason


def test_the_config_picks_the_class_output(repo: Repo) -> None:
    image = np.random.default_rng(1).normal(size=(3, 4, 4)).astype(np.float32)
    scores = repo.client.predict("head_b", image).scores
    np.testing.assert_allclose(scores, direct(repo.files["head_b"], image[None], "head_b")[0], rtol=0, atol=1e-6)
    assert repo.client.metadata("head_b").num_classes == 7


# ---- outputs without a declared shape -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stripped", "stripped_sized"])
def test_an_output_shape_only_a_run_can_tell_is_probed_at_load(repo: Repo, name: str) -> None:
    metadata = repo.client.metadata(name)
    assert (metadata.state, metadata.num_classes, metadata.outputs[0].shape) == ("ready", 6, [-1, 6])
    image = np.random.default_rng(2).normal(size=(3, 8, 8)).astype(np.float32)
    scores = repo.client.predict(name, image).scores
    np.testing.assert_allclose(scores, direct(repo.files[name], image[None])[0], rtol=0, atol=1e-6)


def test_an_unknown_output_shape_with_no_input_size_to_probe_is_unavailable_saying_what_to_add(repo: Repo) -> None:
    reason = unavailable_reason(repo, "stripped_unsized")
    assert "does not declare the shape of output 'scores'" in reason and "preprocessing.resize" in reason


# ---- uint8 inputs ---------------------------------------------------------------------------------------------------


def test_a_uint8_model_is_described_with_its_input_type_and_unscaled_preprocessing(repo: Repo) -> None:
    metadata = repo.client.metadata("pixels")
    assert (metadata.state, metadata.layout, metadata.num_classes) == ("ready", "nhwc", UINT8_CLASSES)
    assert metadata.inputs[0].dtype == "uint8"
    assert metadata.preprocessing["scale"] == 1.0


def test_a_float_model_whose_config_names_no_scale_still_takes_pixels_to_0_1(repo: Repo) -> None:
    assert repo.client.metadata("stripped_sized").preprocessing["scale"] == pytest.approx(1 / 255)


def test_encoded_and_raw_uint8_images_score_as_onnxruntime_on_the_pixels(repo: Repo) -> None:
    pixels = rgb_pixels(SIZE, SIZE)
    expected = direct(repo.files["pixels"], pixels[None])[0]
    for name, image in (("pixels", png(pixels)), ("pixels", pixels), ("pixels_raw", pixels)):
        np.testing.assert_allclose(repo.client.predict(name, image).scores, expected, rtol=0, atol=1e-6)


def test_an_encoded_image_is_resized_in_uint8_as_configured(repo: Repo) -> None:
    pixels = rgb_pixels(20, 24, seed=3)
    resized = cv2.resize(pixels, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    expected = direct(repo.files["pixels"], resized[None])[0]
    np.testing.assert_allclose(repo.client.predict("pixels", png(pixels)).scores, expected, rtol=0, atol=1e-6)


def test_occlusion_on_a_uint8_model_occludes_in_pixel_units(repo: Repo) -> None:
    pixels = rgb_pixels(SIZE, SIZE, seed=4)
    explanation = repo.client.explain("pixels", pixels, method="occlusion", window=4, stride=4)
    assert explanation.attribution.shape == (SIZE, SIZE) and np.isfinite(explanation.attribution).all()
    target = explanation.targets[0]
    original = direct(repo.files["pixels"], pixels[None])[0, target]
    expected = np.zeros((SIZE, SIZE), np.float32)
    for top in range(0, SIZE, 4):
        for left in range(0, SIZE, 4):
            occluded = pixels.copy()
            occluded[top : top + 4, left : left + 4] = 0
            score = direct(repo.files["pixels"], occluded[None])[0, target]
            expected[top : top + 4, left : left + 4] = original - score
    np.testing.assert_allclose(explanation.attribution, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("rise", {"num_masks": 64, "seed": 0}),
        ("lime", {"num_samples": 64, "segmentation": "grid", "n_segments": 16, "seed": 0}),
        ("prediction_difference", {"window": 4, "num_samples": 2, "seed": 0}),
    ],
)
def test_other_perturbation_methods_on_a_uint8_model_give_finite_maps(repo: Repo, method: str, params: dict) -> None:
    explanation = repo.client.explain("pixels", png(rgb_pixels(SIZE, SIZE, seed=5)), method=method, **params)
    assert explanation.attribution.shape == (SIZE, SIZE) and np.isfinite(explanation.attribution).all()


def test_a_float_tensor_for_a_uint8_model_is_invalid_argument_naming_uint8(repo: Repo) -> None:
    floats = rgb_pixels(SIZE, SIZE).astype(np.float32)
    refused(lambda: repo.client.predict("pixels", floats), grpc.StatusCode.INVALID_ARGUMENT, "must be uint8", "float32")


def test_integer_values_the_input_type_cannot_hold_are_invalid_argument(repo: Repo) -> None:
    wide = rgb_pixels(SIZE, SIZE).astype(np.int64)
    wide[0, 0, 0] = 300
    refused(lambda: repo.client.predict("pixels", wide), grpc.StatusCode.INVALID_ARGUMENT, "[0, 300]", "0 to 255")
    np.testing.assert_allclose(
        repo.client.predict("pixels", np.minimum(wide, 255)).scores,
        direct(repo.files["pixels"], np.minimum(wide, 255).astype(np.uint8)[None])[0],
        rtol=0,
        atol=1e-6,
    )


def test_a_uint8_tensor_for_a_float_model_is_invalid_argument_asking_for_float32(repo: Repo) -> None:
    pixels = np.zeros((3, 4, 4), np.uint8)
    refused(lambda: repo.client.predict("face", pixels), grpc.StatusCode.INVALID_ARGUMENT, "must be float32", "uint8")


def test_a_float_normalisation_in_a_uint8_models_config_is_refused_at_load(repo: Repo) -> None:
    reason = unavailable_reason(repo, "pixels_normalised_twice")
    assert "uint8 input" in reason and "leave scale, mean and std out" in reason


def test_the_inference_protocol_takes_a_uint8_batch(repo: Repo) -> None:
    batch = np.stack([rgb_pixels(SIZE, SIZE, seed) for seed in range(2)])
    client = triton.InferenceServerClient(repo.target)
    try:
        (model_input,) = client.get_model_metadata("pixels").inputs
        assert (model_input.datatype, list(model_input.shape)) == ("UINT8", [-1, SIZE, SIZE, 3])
        tensor = triton.InferInput("pixels", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        scores = client.infer("pixels", [tensor]).as_numpy("probabilities")
    finally:
        client.close()
    np.testing.assert_allclose(scores, direct(repo.files["pixels"], batch), rtol=0, atol=1e-6)


def test_the_inference_protocol_takes_uint8_pixels_as_typed_contents(repo: Repo) -> None:
    """uint_contents carries UINT8 as uint32: the pixels' whole range, 0 and 255 included, arrives unchanged."""
    batch = np.stack([rgb_pixels(SIZE, SIZE, seed) for seed in range(2)])
    batch[0, 0, 0], batch[1, 0, 0] = 0, 255
    request = service_pb2.ModelInferRequest(model_name="pixels")
    tensor = request.inputs.add(name="pixels", datatype="UINT8", shape=batch.shape)
    tensor.contents.uint_contents.extend(batch.ravel().tolist())
    with grpc.insecure_channel(repo.target) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    (raw,) = response.raw_output_contents
    scores = np.frombuffer(raw, dtype="<f4").reshape(list(response.outputs[0].shape))
    np.testing.assert_allclose(scores, direct(repo.files["pixels"], batch), rtol=0, atol=1e-6)
