"""Limits on a request's images as a whole: decoded pixels summed over its images, and cancellation between
images (of Predict and Explain calls too), both before any further image is decoded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import pytest

from onnxplain.server.demo import REPOSITORY
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.errors import Cancelled, InvalidInput
from onnxplain.server.handlers import inputs
from onnxplain.server.handlers.explain import explain
from onnxplain.server.handlers.inputs import prepare_images
from onnxplain.server.handlers.predict import predict
from onnxplain.server.handlers.schema import ExplainQuery, ImageInput, PredictQuery
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel, ModelSource
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import ServerSettings

SAMPLES = sorted((REPOSITORY.parent / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    settings = ServerSettings(model_repository=REPOSITORY)
    name = next(path.name for path in REPOSITORY.iterdir() if path.is_dir())
    return load_model(ModelSource(name, "1", REPOSITORY / name / "1" / "model.onnx"), settings)


def encoded_samples(count: int) -> list[ImageInput]:
    return [ImageInput(encoded=Path(SAMPLES[i % len(SAMPLES)]).read_bytes()) for i in range(count)]


def test_pixels_are_limited_per_request_not_only_per_image(demo: LoadedModel) -> None:
    images = encoded_samples(4)
    total = sum(cv2.imread(str(SAMPLES[i])).shape[0] * cv2.imread(str(SAMPLES[i])).shape[1] for i in range(4))
    limits = ServerSettings(model_repository=REPOSITORY).limits
    assert len(prepare_images(demo, images, replace(limits, max_request_pixels=total), CancelToken())) == 4
    with pytest.raises(InvalidInput, match=rf"{total} pixels together, above the limit of {total - 1} per request"):
        prepare_images(demo, images, replace(limits, max_request_pixels=total - 1), CancelToken())


def cancel_on_first_decode(monkeypatch: pytest.MonkeyPatch) -> tuple[CancelToken, list]:
    """A token that the first image's decoding cancels, and the list of decodes made."""
    token, decoded = CancelToken(), []
    real_decode = inputs.decode_image

    def decode_then_cancel(*args: object) -> object:
        decoded.append(args)
        token.cancel()
        return real_decode(*args)

    monkeypatch.setattr(inputs, "decode_image", decode_then_cancel)
    return token, decoded


def test_a_cancelled_call_stops_between_images(demo: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    token, decoded = cancel_on_first_decode(monkeypatch)
    with pytest.raises(Cancelled):
        prepare_images(demo, encoded_samples(5), ServerSettings(model_repository=REPOSITORY).limits, token)
    assert len(decoded) == 1


def test_a_call_waiting_for_a_decoding_turn_is_cancellable(demo: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every turn taken by other requests: the call waits, and a cancel (or its deadline) ends the wait.
    monkeypatch.setattr(inputs, "_DECODE_TURNS", inputs.threading.BoundedSemaphore(1))
    inputs._DECODE_TURNS.acquire()
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        prepare_images(demo, encoded_samples(1), ServerSettings(model_repository=REPOSITORY).limits, token)


@pytest.mark.parametrize("rpc", ["predict", "explain"])
def test_predict_and_explain_stop_between_images_when_cancelled(
    demo: LoadedModel, monkeypatch: pytest.MonkeyPatch, rpc: str
) -> None:
    # The handlers hand their call's token to decoding: cancelled during the first image, the call decodes no other.
    settings = ServerSettings(model_repository=REPOSITORY)
    registry = ModelRegistry(REPOSITORY, lambda source: demo)
    registry.load_latest_versions()
    token, decoded = cancel_on_first_decode(monkeypatch)
    images = encoded_samples(5)
    with pytest.raises(Cancelled):
        if rpc == "predict":
            predict(registry, PredictQuery(demo.name, "", images), settings.limits, token)
        else:
            explain(registry, ExplainQuery(demo.name, "", images, "saliency"), settings, token)
    assert len(decoded) == 1
