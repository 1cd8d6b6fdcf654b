"""Predict returns exactly what ONNX Runtime computes for the same input, with labels and top-k."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from onnxplain.client import Client
from onnxplain.server.demo import REPOSITORY, SAMPLES

DEMO_MODEL = REPOSITORY / "digits" / "1" / "model.onnx"
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def demo_tensor(path) -> np.ndarray:
    """The demo's config.yaml written out by hand: gray, area-resize to 28x28, times scale 1/255, NCHW."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    small = cv2.resize(gray, (28, 28), interpolation=cv2.INTER_AREA)
    return (small.astype(np.float32) * np.float32(0.00392156862745098))[None]


def direct_scores(batch: np.ndarray) -> np.ndarray:
    """A plain ONNX Runtime run with the server's thread count (1 in the tests), so reductions run in one order."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(DEMO_MODEL), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": batch})[0]


def test_predict_on_encoded_images_matches_onnxruntime(demo_client: Client) -> None:
    paths = sorted(SAMPLES.glob("digit_?_*.png"))
    paths = [p for p in paths if not p.stem.endswith("_mask")]
    predictions = demo_client.predict("digits", paths, top_k=3)
    expected = direct_scores(np.stack([demo_tensor(p) for p in paths]))
    for prediction, path, row in zip(predictions, paths, expected, strict=True):
        np.testing.assert_allclose(prediction.scores, row, rtol=0, atol=1e-6)
        assert prediction.top[0].label == LABELS[int(path.stem.split("_")[1])]
        assert [s.class_index for s in prediction.top] == list(np.argsort(-row)[:3])


def test_predict_on_raw_tensor_matches_onnxruntime(demo_client: Client) -> None:
    tensor = np.random.default_rng(0).random((1, 28, 28), dtype=np.float32)
    prediction = demo_client.predict("digits", tensor, top_k=10)
    expected = direct_scores(tensor[None])[0]
    np.testing.assert_allclose(prediction.scores, expected, rtol=0, atol=1e-6)
    softmax = np.exp(expected - expected.max()) / np.exp(expected - expected.max()).sum()
    by_class = {s.class_index: s for s in prediction.top}
    for index in range(10):
        assert by_class[index].label == LABELS[index]
        assert by_class[index].probability == pytest.approx(softmax[index], abs=1e-6)
