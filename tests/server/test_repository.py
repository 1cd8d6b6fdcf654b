"""The model repository and what the server infers from each graph, through one real server on a tmp repository.

The repository holds every model the tests need (built once per module); tests that change files on disk or load
and unload versions use models of their own and leave the server as they found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from support.models import IR_VERSION, ChannelsLast, SmallCNN, WithSoftmax, export, write_model
from support.servers import start_server

from onnxplain.client import Client, OnnxplainError

SHAPE = (1, 3, 16, 16)
LABELS = ["cat", "dog", "bird"]
PREPROCESSING = {
    "resize": [16, 16],
    "color": "rgb",
    "scale": 1 / 255,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "layout": "NCHW",
    "interpolation": "linear",
}
BAD_CONFIGS = {
    "bad_top_key": ({"lables": LABELS}, "unknown key(s) in the config: lables"),
    "bad_preprocessing_key": ({"preprocessing": {**PREPROCESSING, "colour": "rgb"}}, "colour"),
    "bad_output_kind": ({"output": {"kind": "logprobs"}}, "output.kind must be one of"),
    "bad_std": ({"preprocessing": {**PREPROCESSING, "std": [0.0]}}, "std must not contain 0"),
    "bad_labels_file": ({"labels_file": "../outside.txt"}, "outside the model folder"),
}
SECRET_RELATIVE = "../../secret.bin"
GARBAGE = b"not an onnx model at all " * 10


@dataclass
class Repo:
    client: Client
    root: Path
    files: dict[str, Path]
    models: dict[str, bytes]


def external_weight_model(location: str) -> bytes:
    """scores = row means of (input * weight), the one-element weight stored in an external file at `location`."""
    weight = TensorProto(name="weight", data_type=TensorProto.FLOAT, dims=[1])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["input", "weight"], ["scaled"]),
            helper.make_node("ReduceMean", ["scaled"], ["rows"], axes=[3], keepdims=0),
            helper.make_node("Flatten", ["rows"], ["scores"], axis=1),
        ],
        "external",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        initializer=[weight],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION
    ).SerializeToString()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = tmp_path_factory.mktemp("repository")
    models = {
        "plain": export(SmallCNN(), SHAPE),
        "nhwc": export(ChannelsLast(SmallCNN(seed=1)), (1, 16, 16, 3)),
        "softmax": export(WithSoftmax(SmallCNN(seed=2)), SHAPE),
        "batch1": export(SmallCNN(seed=3), SHAPE, dynamic_batch=False),
        "dynamic": export(SmallCNN(seed=4), SHAPE, dynamic_spatial=True),
        "three_classes": export(SmallCNN(classes=3, seed=5), SHAPE),
        "versioned/1": export(SmallCNN(seed=6), SHAPE),
        "versioned/2": export(SmallCNN(seed=7), SHAPE),
        "swapped": export(SmallCNN(seed=8), SHAPE),
        "escape": external_weight_model(SECRET_RELATIVE),
        "inside": external_weight_model("weights.bin"),
    }
    files = {}
    for name in ("plain", "nhwc", "softmax", "batch1", "dynamic"):
        files[name] = write_model(root, name, models[name])
    files["labelled"] = write_model(
        root, "labelled", models["three_classes"], {"labels": LABELS, "preprocessing": PREPROCESSING}
    )
    # Preprocessing that names no layout: the layout should come from the graph (NHWC here).
    files["nhwc_preprocessed"] = write_model(
        root, "nhwc_preprocessed", models["nhwc"], {"preprocessing": {"resize": [16, 16]}}
    )
    files["labels_file"] = write_model(root, "labels_file", models["three_classes"], {"labels_file": "names.txt"})
    (root / "labels_file" / "names.txt").write_text("alpha\nbeta\n\ngamma\n")
    for name, (config, _) in BAD_CONFIGS.items():
        files[name] = write_model(root, name, models["plain"], config)
    (root / "outside.txt").write_text("x\ny\nz\n")
    files["versioned/1"] = write_model(root, "versioned", models["versioned/1"], version="1")
    files["versioned/2"] = write_model(root, "versioned", models["versioned/2"], version="2")
    files["reloadable"] = write_model(root, "reloadable", models["plain"])
    files["swappable"] = write_model(root, "swappable", models["plain"])
    # The secret lies where ../../ from escape/1/ points: were it read, the model would load and serve.
    (root / "secret.bin").write_bytes(np.float32(2.0).tobytes())
    files["escape"] = write_model(root, "escape", models["escape"])
    files["escape_absolute"] = write_model(root, "escape_absolute", external_weight_model(str(root / "secret.bin")))
    files["inside"] = write_model(root, "inside", models["inside"])
    (files["inside"].parent / "weights.bin").write_bytes(np.float32(2.0).tobytes())

    server = start_server(root)
    try:
        with Client(server.target, timeout=60) as client:
            yield Repo(client, root, files, models)
    finally:
        assert server.stop() == 0, "".join(server.output)


def onnxruntime_scores(model: Path | bytes, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model))
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def random_images(shape: tuple[int, ...], count: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, *shape)).astype(np.float32)


def png(height: int, width: int) -> bytes:
    pixels = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


def refused(call, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(OnnxplainError) as caught:
        call()
    error = caught.value
    assert error.code is code, f"expected {code.name}, got {error.code.name}: {error.message}"
    for fragment in fragments:
        assert fragment in error.message, f"{fragment!r} not in {error.message!r}"
    return error.message


def occlusion_reference(model: Path, image: np.ndarray, target: int, window: int, layout: str) -> np.ndarray:
    """Occlusion with non-overlapping windows (stride = window), one ONNX Runtime run per window."""
    height, width = image.shape[1:3] if layout == "NCHW" else image.shape[0:2]
    original = onnxruntime_scores(model, image[None])[0, target]
    expected = np.zeros((height, width), dtype=np.float32)
    for top in range(0, height, window):
        for left in range(0, width, window):
            occluded = image.copy()
            if layout == "NCHW":
                occluded[:, top : top + window, left : left + window] = 0.0
            else:
                occluded[top : top + window, left : left + window, :] = 0.0
            score = onnxruntime_scores(model, occluded[None])[0, target]
            expected[top : top + window, left : left + window] = original - score
    return expected


# ---- graph inference without a config ------------------------------------------------------------------------------


def test_a_model_without_config_is_described_from_its_graph(repo: Repo) -> None:
    metadata = repo.client.metadata("plain")
    assert (metadata.state, metadata.version, metadata.versions) == ("ready", "1", ["1"])
    assert metadata.layout == "nchw"
    assert metadata.output_kind == "logits"
    assert metadata.preprocessing is None
    assert metadata.labels == []
    assert metadata.num_classes == 5
    assert metadata.max_batch_size == 0
    (model_input,) = metadata.inputs
    assert (model_input.name, model_input.dtype, model_input.shape) == ("input", "float", [-1, 3, 16, 16])
    assert model_input.dim_names[0] == "batch"
    (output,) = metadata.outputs
    assert (output.name, output.shape) == ("scores", [-1, 5])


def test_predict_on_a_raw_tensor_equals_onnxruntime_on_the_same_file(repo: Repo) -> None:
    images = random_images(SHAPE[1:], count=2)
    predictions = repo.client.predict("plain", list(images), top_k=5)
    expected = onnxruntime_scores(repo.files["plain"], images)
    for prediction, scores in zip(predictions, expected, strict=True):
        np.testing.assert_allclose(prediction.scores, scores, rtol=0, atol=1e-6)
        assert [c.class_index for c in prediction.top] == list(np.argsort(-scores, kind="stable"))
        assert prediction.top[0].label == ""


def test_occlusion_is_listed_as_supported_in_the_metadata(repo: Repo) -> None:
    methods = {method.name: method for method in repo.client.metadata("plain").methods}
    assert methods["occlusion"].supported
    assert methods["occlusion"].family == "perturbation"
    assert methods["occlusion"].reason == ""
    assert "occlusion" in repo.client.metadata("plain").supported_methods


def test_a_channels_last_model_is_detected_as_nhwc(repo: Repo) -> None:
    metadata = repo.client.metadata("nhwc")
    assert metadata.layout == "nhwc"
    assert metadata.inputs[0].shape == [-1, 16, 16, 3]
    assert metadata.num_classes == 5


def test_occlusion_on_a_raw_nhwc_tensor_gives_a_map_over_height_and_width(repo: Repo) -> None:
    image = random_images((16, 16, 3))[0]
    explanation = repo.client.explain("nhwc", image, method="occlusion", target=2, window=4, stride=4)
    assert explanation.attribution.shape == (16, 16)
    assert explanation.geometry is None
    expected = occlusion_reference(repo.files["nhwc"], image, target=2, window=4, layout="NHWC")
    np.testing.assert_allclose(explanation.attribution, expected, rtol=0, atol=1e-5)


def test_an_nhwc_model_with_preprocessing_that_names_no_layout_takes_encoded_images(repo: Repo) -> None:
    # The config leaves the layout out, so the one inferred from the graph (NHWC) should apply, as it does without
    # a config; today the preprocessing defaults to NCHW and the model is refused as a mismatch.
    metadata = repo.client.metadata("nhwc_preprocessed")
    assert (metadata.state, metadata.reason) == ("ready", "")
    assert metadata.preprocessing is not None and metadata.preprocessing["layout"] == "nhwc"
    assert repo.client.predict("nhwc_preprocessed", png(20, 24)).scores.shape == (5,)


def test_a_model_ending_in_softmax_reports_probabilities(repo: Repo) -> None:
    assert repo.client.metadata("softmax").output_kind == "probabilities"
    prediction = repo.client.predict("softmax", random_images(SHAPE[1:])[0])
    assert prediction.scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert all(c.probability == pytest.approx(c.score) for c in prediction.top)


# ---- fixed batch and dynamic spatial dimensions ----------------------------------------------------------------------


def test_a_fixed_batch_model_reports_its_batch_limit(repo: Repo) -> None:
    metadata = repo.client.metadata("batch1")
    assert metadata.inputs[0].shape == [1, 3, 16, 16]
    assert metadata.max_batch_size == 1


def test_a_fixed_batch_of_one_model_predicts_several_images_in_one_request(repo: Repo) -> None:
    images = random_images(SHAPE[1:], count=3, seed=1)
    predictions = repo.client.predict("batch1", list(images))
    assert len(predictions) == 3
    for image, prediction in zip(images, predictions, strict=True):
        expected = onnxruntime_scores(repo.files["batch1"], image[None])[0]
        np.testing.assert_allclose(prediction.scores, expected, rtol=0, atol=1e-6)


def test_occlusion_runs_many_perturbations_through_a_fixed_batch_of_one_model(repo: Repo) -> None:
    image = random_images(SHAPE[1:], seed=2)[0]
    explanation = repo.client.explain("batch1", image, target=1, window=4, stride=4)
    assert explanation.attribution.shape == (16, 16)
    assert explanation.cost.forward_passes == 1 + 16
    expected = occlusion_reference(repo.files["batch1"], image, target=1, window=4, layout="NCHW")
    np.testing.assert_allclose(explanation.attribution, expected, rtol=0, atol=1e-5)


def test_the_cost_of_a_fixed_batch_model_reports_its_real_runs(repo: Repo) -> None:
    # Cost.batch_size is "images per ONNX Runtime run": a batch-1 model runs one image at a time, 1 + 16 runs here.
    explanation = repo.client.explain("batch1", random_images(SHAPE[1:])[0], target=1, window=4, stride=4)
    assert (explanation.cost.batch_size, explanation.cost.runs) == (1, 17)


def test_a_dynamic_spatial_model_takes_two_sizes_in_one_request(repo: Repo) -> None:
    metadata = repo.client.metadata("dynamic")
    assert metadata.inputs[0].shape == [-1, 3, -1, -1]
    small, large = random_images((3, 16, 16))[0], random_images((3, 24, 20), seed=3)[0]
    predictions = repo.client.predict("dynamic", [small, large])
    for image, prediction in zip((small, large), predictions, strict=True):
        expected = onnxruntime_scores(repo.files["dynamic"], image[None])[0]
        np.testing.assert_allclose(prediction.scores, expected, rtol=0, atol=1e-6)


# ---- config.yaml -----------------------------------------------------------------------------------------------------


def test_inline_labels_and_the_preprocessing_spec_are_in_the_metadata(repo: Repo) -> None:
    metadata = repo.client.metadata("labelled")
    assert metadata.labels == LABELS
    assert metadata.num_classes == 3
    assert metadata.preprocessing == {
        "resize": [16, 16],
        "center_crop": [],
        "color_order": "rgb",
        "scale": pytest.approx(1 / 255),
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "layout": "nchw",
        "interpolation": "linear",
    }


def test_labels_from_a_labels_file_skip_blank_lines(repo: Repo) -> None:
    assert repo.client.metadata("labels_file").labels == ["alpha", "beta", "gamma"]
    prediction = repo.client.predict("labels_file", random_images(SHAPE[1:])[0], top_k=3)
    assert sorted(c.label for c in prediction.top) == ["alpha", "beta", "gamma"]


def test_a_target_given_by_label_explains_that_class(repo: Repo) -> None:
    explanation = repo.client.explain("labelled", png(20, 24), target="dog", window=4)
    assert (explanation.targets, explanation.labels) == ([1], ["dog"])
    assert explanation.attribution.shape == (16, 16)
    assert explanation.geometry is not None
    assert (explanation.geometry.original_height, explanation.geometry.original_width) == (20, 24)


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_a_bad_config_makes_only_that_model_unavailable(repo: Repo, name: str) -> None:
    reason = BAD_CONFIGS[name][1]
    statuses = {status.name: status for status in repo.client.models()}
    assert statuses[name].state == "unavailable"
    assert reason in statuses[name].reason
    metadata = repo.client.metadata(name)
    assert metadata.state == "unavailable"
    assert reason in metadata.reason
    refused(lambda: repo.client.predict(name, random_images(SHAPE[1:])[0]), grpc.StatusCode.UNAVAILABLE, reason)
    assert statuses["plain"].state == "ready"
    assert repo.client.predict("plain", random_images(SHAPE[1:])[0]).scores.shape == (5,)


# ---- versions, load, unload, reload ----------------------------------------------------------------------------------


def test_only_the_latest_version_is_loaded_at_start(repo: Repo) -> None:
    states = {(s.name, s.version): s.state for s in repo.client.models() if s.name == "versioned"}
    assert states == {("versioned", "1"): "unloaded", ("versioned", "2"): "ready"}
    metadata = repo.client.metadata("versioned")
    assert (metadata.version, metadata.versions) == ("2", ["1", "2"])


def test_predict_without_a_version_uses_the_latest(repo: Repo) -> None:
    image = random_images(SHAPE[1:])[0]
    expected = onnxruntime_scores(repo.files["versioned/2"], image[None])[0]
    np.testing.assert_allclose(repo.client.predict("versioned", image).scores, expected, rtol=0, atol=1e-6)


def test_an_older_version_loads_serves_its_own_weights_and_unloads(repo: Repo) -> None:
    image = random_images(SHAPE[1:], seed=4)[0]
    old = onnxruntime_scores(repo.files["versioned/1"], image[None])[0]
    new = onnxruntime_scores(repo.files["versioned/2"], image[None])[0]
    assert not np.allclose(old, new, atol=1e-3)
    refused(lambda: repo.client.predict("versioned", image, version="1"), grpc.StatusCode.UNAVAILABLE, "not loaded")

    status = repo.client.load("versioned", "1")
    assert (status.version, status.state) == ("1", "ready")
    np.testing.assert_allclose(repo.client.predict("versioned", image, version="1").scores, old, rtol=0, atol=1e-6)
    np.testing.assert_allclose(repo.client.predict("versioned", image).scores, new, rtol=0, atol=1e-6)

    (unloaded,) = repo.client.unload("versioned", "1")
    assert (unloaded.version, unloaded.state) == ("1", "unloaded")
    refused(lambda: repo.client.predict("versioned", image, version="1"), grpc.StatusCode.UNAVAILABLE, "version 1")
    np.testing.assert_allclose(repo.client.predict("versioned", image).scores, new, rtol=0, atol=1e-6)


def test_an_unknown_version_is_not_found_everywhere(repo: Repo) -> None:
    image = random_images(SHAPE[1:])[0]
    for call in (
        lambda: repo.client.predict("versioned", image, version="3"),
        lambda: repo.client.load("versioned", "3"),
        lambda: repo.client.reload("versioned", "3"),
        lambda: repo.client.unload("versioned", "3"),
        lambda: repo.client.metadata("versioned", "3"),
    ):
        refused(call, grpc.StatusCode.NOT_FOUND, "'versioned'", "'3'")


def test_reload_of_a_served_model_keeps_it_ready(repo: Repo) -> None:
    status = repo.client.reload("versioned")
    assert (status.name, status.version, status.state) == ("versioned", "2", "ready")
    image = random_images(SHAPE[1:])[0]
    expected = onnxruntime_scores(repo.files["versioned/2"], image[None])[0]
    np.testing.assert_allclose(repo.client.predict("versioned", image).scores, expected, rtol=0, atol=1e-6)


def test_reload_picks_up_new_weights_written_over_the_file(repo: Repo) -> None:
    image = random_images(SHAPE[1:], seed=5)[0]
    before = repo.client.predict("swappable", image).scores
    repo.files["swappable"].write_bytes(repo.models["swapped"])
    assert repo.client.reload("swappable").state == "ready"
    after = repo.client.predict("swappable", image).scores
    np.testing.assert_allclose(after, onnxruntime_scores(repo.models["swapped"], image[None])[0], rtol=0, atol=1e-6)
    assert not np.allclose(before, after, atol=1e-3)


def test_reload_of_a_broken_file_keeps_the_previous_session_serving(repo: Repo) -> None:
    image = random_images(SHAPE[1:], seed=6)[0]
    before = repo.client.predict("reloadable", image).scores
    repo.files["reloadable"].write_bytes(GARBAGE)
    refused(
        lambda: repo.client.reload("reloadable"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "'reloadable'",
        "not a readable ONNX model",
        "previously loaded session keeps serving",
    )
    np.testing.assert_allclose(repo.client.predict("reloadable", image).scores, before, rtol=0, atol=0)
    status = next(s for s in repo.client.models() if s.name == "reloadable")
    assert (status.state, status.reason) == ("ready", "")


# ---- external data ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["escape", "escape_absolute"])
def test_external_data_outside_the_model_folder_is_refused(repo: Repo, name: str) -> None:
    status = next(s for s in repo.client.models() if s.name == name)
    assert status.state == "unavailable"
    assert "points outside the model folder" in status.reason
    assert "'weight'" in status.reason
    assert "secret.bin" in status.reason
    refused(
        lambda: repo.client.predict(name, np.ones((1, 4, 8), np.float32)),
        grpc.StatusCode.UNAVAILABLE,
        "outside the model folder",
    )


def test_external_data_inside_the_model_folder_loads(repo: Repo) -> None:
    image = np.arange(32, dtype=np.float32).reshape(1, 4, 8)
    prediction = repo.client.predict("inside", image)
    np.testing.assert_allclose(prediction.scores, 2.0 * image[0].mean(axis=1), rtol=1e-6)
