"""One repository entry, explained head by head: a request's `output` names the head, and Predict and Explain give
that head's scores and maps (torch autograd, Captum's Occlusion and Grad-CAM's formula on the same head as
references); no `output` keeps the default head; a name that is no output, or an output that is not class scores,
is INVALID_ARGUMENT naming the outputs. The Python clients' `output=` and the CLI's `--output` reach the server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from captum.attr import Occlusion
from onnx import TensorProto, helper, numpy_helper
from support.models import IR_VERSION, SmallCNN, export, write_model
from support.servers import RunningServer, run_cli, start_server
from support.variants import regression_output_first

from onnxplain.client import AsyncClient, Client, MethodSpec, OnnxplainError
from onnxplain.server.errors import FailedPrecondition
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel, ModelSource
from onnxplain.server.settings import ServerSettings

IMAGE_SHAPE = (3, 12, 16)
DIGITS = [f"digit{i}" for i in range(5)]
DIGIT_LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Outputs of the captcha reader that are not class scores, and what the refusal says about each.
NOT_SCORES = {"features": "has shape (?, 16, 12, 16)", "confidence": "has shape (?)", "guess": "is int64"}
BOX_CLASSES = 6


class CaptchaReader(torch.nn.Module):
    """Five digit heads (each (N, 10) Softmax) on one backbone, plus outputs that are not class scores: the feature
    map, the first digit's confidence (N,) and its argmax (int64)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.ReLU(),
        )
        self.digits = torch.nn.ModuleList(torch.nn.Linear(16, 10) for _ in DIGITS)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feature_map = self.features(x)
        pooled = feature_map.mean(dim=(2, 3))
        return feature_map, [digit(pooled) for digit in self.digits]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feature_map, logits = self.logits(x)
        digits = [torch.softmax(logit, dim=1) for logit in logits]
        confidence, guess = digits[0].max(dim=1)
        return (*digits, feature_map, confidence, guess)


def export_captcha(model: CaptchaReader) -> bytes:
    names = [*DIGITS, *NOT_SCORES]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.zeros((1, *IMAGE_SHAPE)),),
            buffer,
            input_names=["input"],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["input", *names]},
            opset_version=17,
            dynamo=False,
        )
    exported = onnx.load_from_string(buffer.getvalue())
    exported.ir_version = IR_VERSION
    return exported.SerializeToString()


def box_weights() -> torch.Tensor:
    """The regressor regression_output_first puts on the logits (its seed and shape)."""
    return torch.from_numpy(np.random.default_rng(11).normal(size=(BOX_CLASSES, 4)).astype(np.float32))


@pytest.fixture(scope="module")
def captcha() -> CaptchaReader:
    return CaptchaReader().eval()


@pytest.fixture(scope="module")
def face() -> SmallCNN:
    """The logits under the two-head model: boxes = logits @ W, probabilities = softmax(logits)."""
    return SmallCNN(channels=3, classes=BOX_CLASSES, seed=7).eval()


@pytest.fixture(scope="module")
def server(tmp_path_factory, captcha, face) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("repository")
    config = {"output": {"name": "digit0"}, "labels": DIGIT_LABELS, "preprocessing": {"resize": list(IMAGE_SHAPE[1:])}}
    write_model(repository, "captcha", export_captcha(captcha), config)
    classifier = onnx.load_from_string(export(face, (1, *IMAGE_SHAPE)))
    write_model(repository, "face", regression_output_first(classifier, BOX_CLASSES).SerializeToString())
    running = start_server(repository)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[Client]:
    with Client(server.target, timeout=120) as connected:
        yield connected


def head_scores(model: torch.nn.Module, output: str) -> torch.nn.Module:
    """The raw output of one head, as a module Captum can call."""

    class Head(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if isinstance(model, CaptchaReader):
                return model(x)[DIGITS.index(output)]
            logits = model(x)
            return logits @ box_weights() if output == "boxes" else torch.softmax(logits, dim=1)

    return Head()


def head_logit(model: torch.nn.Module, output: str, x: torch.Tensor) -> torch.Tensor:
    """What gradient methods differentiate: the head's scores before a final Softmax."""
    if isinstance(model, CaptchaReader):
        return model.logits(x)[1][DIGITS.index(output)]
    logits = model(x)
    return logits @ box_weights() if output == "boxes" else logits


def random_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=IMAGE_SHAPE).astype(np.float32)


def saliency_reference(model: torch.nn.Module, output: str, image: np.ndarray, target: int) -> np.ndarray:
    inputs = torch.from_numpy(image)[None].requires_grad_()
    (gradient,) = torch.autograd.grad(head_logit(model, output, inputs)[0, target], inputs)
    return gradient[0].abs().amax(dim=0).numpy()


def grad_cam_reference(captcha: CaptchaReader, output: str, image: np.ndarray, target: int) -> np.ndarray:
    """Selvaraju et al.: ReLU(Σ_k mean(∂y_c/∂A_k) A_k) on the last feature map, resized bilinearly to the image."""
    inputs = torch.from_numpy(image)[None]
    feature_map = captcha.features(inputs)
    feature_map.retain_grad()
    logit = captcha.digits[DIGITS.index(output)](feature_map.mean(dim=(2, 3)))[0, target]
    (gradient,) = torch.autograd.grad(logit, feature_map)
    weights = gradient[0].mean(dim=(1, 2))
    cam = torch.relu(torch.einsum("c,chw->hw", weights, feature_map[0])).detach().numpy()
    return cv2.resize(cam, (IMAGE_SHAPE[2], IMAGE_SHAPE[1]), interpolation=cv2.INTER_LINEAR)


def occlusion_reference(model: torch.nn.Module, output: str, image: np.ndarray, target: int) -> np.ndarray:
    attribution = Occlusion(head_scores(model, output)).attribute(
        torch.from_numpy(image)[None],
        sliding_window_shapes=(3, 4, 4),
        strides=(3, 4, 4),
        target=target,
        baselines=0.0,
        perturbations_per_eval=16,
    )
    return attribution[0, 0].detach().numpy()


def refusal(call) -> OnnxplainError:
    with pytest.raises(OnnxplainError) as caught:
        call()
    return caught.value


def test_metadata_lists_the_heads_default_first(client) -> None:
    captcha = client.metadata("captcha")
    assert captcha.heads == DIGITS
    assert [o.name for o in captcha.outputs] == [*DIGITS, *NOT_SCORES]
    assert (captcha.num_classes, captcha.labels) == (10, DIGIT_LABELS)
    assert client.metadata("face").heads == ["probabilities", "boxes"]


@pytest.mark.parametrize("output", DIGITS)
def test_each_digit_head_predicts_and_explains_its_own_digit(client, captcha, output) -> None:
    image = random_image(DIGITS.index(output))
    with torch.no_grad():
        expected = head_scores(captcha, output)(torch.from_numpy(image)[None])[0].numpy()
    prediction = client.predict("captcha", image, output=output, top_k=3)
    np.testing.assert_allclose(prediction.scores, expected, rtol=1e-5, atol=1e-6)
    assert [c.class_index for c in prediction.top] == list(np.argsort(-expected, kind="stable")[:3])
    # Probabilities from a Softmax head are its scores; labels belong to the default head.
    np.testing.assert_allclose([c.probability for c in prediction.top], np.sort(expected)[::-1][:3], rtol=1e-5)
    assert all(c.label == (DIGIT_LABELS[c.class_index] if output == "digit0" else "") for c in prediction.top)

    target = int(np.argsort(expected)[4])  # a class other than the top one: the target reaches the head
    saliency = client.explain("captcha", image, method="saliency", target=target, output=output)
    reference = saliency_reference(captcha, output, image, target)
    np.testing.assert_allclose(saliency.attribution, reference, rtol=1e-4, atol=1e-5 * float(reference.max()))
    np.testing.assert_allclose(saliency.scores, expected, rtol=1e-5, atol=1e-6)

    occlusion = client.explain("captcha", image, method="occlusion", target=target, output=output, window=4, stride=4)
    np.testing.assert_allclose(occlusion.attribution, occlusion_reference(captcha, output, image, target), atol=1e-6)

    cam = client.explain("captcha", image, method="grad_cam", target=target, output=output)
    reference = grad_cam_reference(captcha, output, image, target)
    np.testing.assert_allclose(cam.attribution, reference, rtol=1e-4, atol=1e-5 * float(reference.max()))


def test_the_heads_of_one_image_differ(client) -> None:
    """Derived graphs are kept per head: the same image and method on two heads gives two different maps."""
    image = random_image(9)
    maps = [client.explain("captcha", image, method="saliency", target=3, output=o).attribution for o in DIGITS]
    assert all(not np.allclose(maps[0], other) for other in maps[1:])


@pytest.mark.parametrize("output", ["digit1", "digit3"])
def test_evaluate_takes_the_head(client, captcha, output) -> None:
    image = random_image(11)
    with torch.no_grad():
        expected = head_scores(captcha, output)(torch.from_numpy(image)[None])[0].numpy()
    maps = np.random.default_rng(4).random((1, *IMAGE_SHAPE[1:])).astype(np.float32)
    evaluation = client.evaluate(
        "captcha", image, methods=[MethodSpec(attributions=[maps])], metrics=["deletion"], output=output, step=48
    )
    (scores,) = evaluation.explainers[0].images[0]
    # The default target is the head's top class, and deletion's first point is its probability on the whole image.
    assert scores.class_index == int(np.argmax(expected))
    np.testing.assert_allclose(scores.curves["deletion"][0], expected.max(), rtol=1e-5)


@pytest.mark.parametrize("output", ["boxes", "probabilities"])
def test_a_face_models_box_regressor_and_class_head(client, face, output) -> None:
    image = random_image(20)
    with torch.no_grad():
        expected = head_scores(face, output)(torch.from_numpy(image)[None])[0].numpy()
    prediction = client.predict("face", image, output=output, top_k=4)
    np.testing.assert_allclose(prediction.scores, expected, rtol=1e-5, atol=1e-5)
    assert len(prediction.scores) == (4 if output == "boxes" else BOX_CLASSES)
    saliency = client.explain("face", image, method="saliency", target=2, output=output)
    reference = saliency_reference(face, output, image, 2)
    np.testing.assert_allclose(saliency.attribution, reference, rtol=1e-4, atol=1e-5 * float(reference.max()))
    occlusion = client.explain("face", image, method="occlusion", target=2, output=output, window=4, stride=4)
    np.testing.assert_allclose(occlusion.attribution, occlusion_reference(face, output, image, 2), atol=1e-5)


@pytest.mark.parametrize(("model", "default"), [("captcha", "digit0"), ("face", "probabilities")])
def test_no_output_is_the_default_head(client, model, default) -> None:
    image = random_image(30)
    named = client.predict(model, image, output=default)
    unnamed = client.predict(model, image)
    np.testing.assert_array_equal(unnamed.scores, named.scores)
    assert unnamed.top == named.top
    maps = [client.explain(model, image, method="saliency", output=o).attribution for o in (default, "")]
    np.testing.assert_array_equal(*maps)


def test_an_unknown_output_is_an_invalid_argument_naming_the_outputs(client) -> None:
    for call in (
        lambda: client.predict("captcha", random_image(1), output="digit9"),
        lambda: client.explain("captcha", random_image(1), method="saliency", output="digit9"),
    ):
        error = refusal(call)
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "no output 'digit9'" in error.message
        assert all(repr(name) in error.message for name in [*DIGITS, *NOT_SCORES])


@pytest.mark.parametrize("output", list(NOT_SCORES))
def test_an_output_that_is_not_class_scores_is_refused_saying_why(client, output) -> None:
    error = refusal(lambda: client.explain("captcha", random_image(2), method="occlusion", output=output))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f"output {output!r} {NOT_SCORES[output]}" in error.message
    assert str(DIGITS) in error.message  # the outputs that can be named instead


def test_a_label_target_belongs_to_the_default_head(client) -> None:
    image = random_image(3)
    assert client.explain("captcha", image, method="saliency", target="seven").targets == [7]
    error = refusal(lambda: client.explain("captcha", image, method="saliency", target="seven", output="digit2"))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT and "'seven'" in error.message


def test_streaming_and_the_async_client_take_the_head(client, server, captcha) -> None:
    image = random_image(4)
    expected = client.explain("captcha", image, method="saliency", target=1, output="digit3").attribution
    events = list(client.explain_stream("captcha", image, method="saliency", target=1, output="digit3"))
    np.testing.assert_array_equal(events[-1].attribution, expected)

    async def scenario():
        async with AsyncClient(server.target, timeout=120) as connected:
            prediction = await connected.predict("captcha", image, output="digit3")
            explanation = await connected.explain("captcha", image, method="saliency", target=1, output="digit3")
            return prediction, explanation

    prediction, explanation = asyncio.run(scenario())
    with torch.no_grad():
        scores = head_scores(captcha, "digit3")(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(prediction.scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(explanation.attribution, expected)


def test_the_cli_output_option_reaches_the_server(client, server, tmp_path: Path) -> None:
    picture = np.random.default_rng(5).integers(0, 256, size=(*IMAGE_SHAPE[1:], 3), dtype=np.uint8)
    image = tmp_path / "captcha.png"
    cv2.imwrite(str(image), picture)
    encoded = image.read_bytes()
    connection = ["--server", server.target, "--model", "captcha"]

    predicted = run_cli("predict", *connection, "--output", "digit4", "--json", "--top-k", "10", str(image))
    assert predicted.returncode == 0, predicted.stderr
    top = json.loads(predicted.stdout)[0]["top"]
    expected = client.predict("captcha", encoded, output="digit4", top_k=10)
    assert [(c["class_index"], c["label"]) for c in top] == [(c.class_index, "") for c in expected.top]
    np.testing.assert_allclose([c["score"] for c in top], [c.score for c in expected.top], rtol=1e-6)
    assert [c["score"] for c in top] != [c.score for c in client.predict("captcha", encoded, top_k=10).top]

    out = tmp_path / "maps"
    explained = run_cli(
        "explain", *connection, "--method", "saliency", "--output", "digit4", "-o", str(out), str(image)
    )
    assert explained.returncode == 0, explained.stderr
    expected_map = client.explain("captcha", encoded, method="saliency", output="digit4").attribution
    np.testing.assert_array_equal(np.load(out / "captcha.saliency.npy"), expected_map)


def gelu_head_model(spatial: int | str) -> bytes:
    """A Softmax head (the default) and a head made by an op ONNX's shape inference does not know (ONNX Runtime's
    Gelu), declared with rank 0: only a run tells its shape."""
    weights = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w_scores"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
            helper.make_node("MatMul", ["pooled", "w_other"], ["other_linear"]),
            helper.make_node("Gelu", ["other_linear"], ["other"], domain="com.microsoft"),
        ],
        "gelu_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, spatial, spatial])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 5]),
            helper.make_tensor_value_info("other", TensorProto.FLOAT, []),
        ],
        [numpy_helper.from_array(weights[0], "w_scores"), numpy_helper.from_array(weights[1], "w_other")],
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION).SerializeToString()


def loaded(repository: Path, name: str, model: bytes) -> LoadedModel:
    path = write_model(repository, name, model)
    return load_model(ModelSource(name, "1", path), ServerSettings(model_repository=repository))


def test_a_head_whose_shape_only_a_run_tells_is_probed(tmp_path: Path) -> None:
    model = loaded(tmp_path, "gelu", gelu_head_model(4))
    assert model.signature.heads == ("scores",)  # its shape is not known before the probe
    head = model.head("other")
    assert head is model.head("other") and model.head("") is model and model.head("scores") is model
    assert (head.num_classes, head.signature.output.shape, head.output_kind) == (5, (None, 5), "logits")
    assert (model.output_kind, head.checks is model.checks) == ("probabilities", False)
    image = np.random.default_rng(1).normal(size=(2, 3, 4, 4)).astype(np.float32)
    (expected,) = ort.InferenceSession(model.source.path).run(["other"], {"x": image})
    np.testing.assert_allclose(head.session.run(image), expected, rtol=1e-6)
    np.testing.assert_allclose(model.session.run(image).sum(axis=1), 1.0, rtol=1e-6)  # the default is untouched


def test_a_head_whose_shape_nothing_can_tell_is_a_failed_precondition(tmp_path: Path) -> None:
    model = loaded(tmp_path, "gelu_dynamic", gelu_head_model("size"))
    with pytest.raises(FailedPrecondition, match=r"shape of output 'other'.*preprocessing.resize"):
        model.head("other")
