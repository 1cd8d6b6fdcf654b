"""Gradient methods on the demo model, as a user meets them: the maps look at the digit, CLEAR comes with its class
picture, and the CLI saves every result."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from support.servers import run_cli

from onnxplain.client import Client
from onnxplain.server.demo import SAMPLES

DEMO = "digits"
STROKED = ("digit_4_strokes", "digit_6_strokes", "digit_7_strokes")


def digit_and_stroke_masks(stem: str) -> tuple[np.ndarray, np.ndarray]:
    """The sample's mask (0 background, 1 digit, 2 distracting strokes) at the model's 28x28."""
    mask = cv2.imread(str(SAMPLES / f"{stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
    mask = cv2.resize(mask, (28, 28), interpolation=cv2.INTER_NEAREST)
    return mask == 1, mask == 2


def test_demo_model_supports_every_gradient_method(demo_client: Client) -> None:
    supported = set(demo_client.metadata(DEMO).supported_methods)
    assert {"saliency", "integrated_gradients", "grad_cam", "lrp", "clear", "guided_backprop"} <= supported


@pytest.mark.parametrize("method", ["grad_cam", "integrated_gradients", "lrp"])
def test_maps_put_more_evidence_on_the_digit_than_on_the_strokes(demo_client: Client, method: str) -> None:
    for stem in STROKED:
        explanation = demo_client.explain(DEMO, SAMPLES / f"{stem}.png", method=method)
        digit, stroke = digit_and_stroke_masks(stem)
        attribution = explanation.attribution
        assert attribution[digit].mean() > attribution[stroke].mean(), stem


def test_clear_returns_class_maps_and_their_picture(demo_client: Client) -> None:
    explanation = demo_client.explain(DEMO, SAMPLES / "digit_3_clean.png", method="clear", overlay=True)
    classes = explanation.extras["dominant_class"]
    assert classes.shape == (28, 28) and classes.dtype == np.int32
    assert set(np.unique(classes)) <= set(range(10))
    picture = cv2.imdecode(np.frombuffer(explanation.renderings["clear"], np.uint8), cv2.IMREAD_COLOR)
    # The original 112x112 picture, and a legend strip beside it (as tall as its rows need).
    assert picture.shape[0] >= 112 and picture.shape[1] > 112
    assert explanation.cost.backward_passes == 10


def test_cli_saves_extras_and_renderings(demo_server, tmp_path: Path) -> None:
    image = str(SAMPLES / "digit_8_clean.png")
    arguments = ["explain", "--server", demo_server.target, "--model", DEMO, "-o", str(tmp_path)]
    result = run_cli(*arguments, "--method", "clear", image)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "digit_8_clean.clear.dominant_class.npy").shape == (28, 28)
    assert cv2.imread(str(tmp_path / "digit_8_clean.clear.clear.png")) is not None
    result = run_cli(*arguments, "--method", "integrated_gradients", "--param", "steps=8", image)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "digit_8_clean.integrated_gradients.convergence_delta.npy").shape == (1,)


def test_signed_gradient_overlay_shows_both_signs(demo_client: Client) -> None:
    explanation = demo_client.explain(
        DEMO, SAMPLES / "digit_4_strokes.png", method="gradient_x_input", overlay=True, polarity="both"
    )
    picture = cv2.imdecode(np.frombuffer(explanation.overlays[0], np.uint8), cv2.IMREAD_COLOR).astype(int)
    blue, green, red = picture[..., 0], picture[..., 1], picture[..., 2]
    assert picture.shape == (112, 112, 3)
    # The map has both signs, so the picture has clearly green pixels and clearly red ones.
    assert explanation.attribution.min() < 0 < explanation.attribution.max()
    assert ((green - np.maximum(red, blue)) > 60).any()
    assert ((red - np.maximum(green, blue)) > 60).any()


def test_client_refuses_an_unknown_polarity(demo_client: Client) -> None:
    with pytest.raises(ValueError, match="polarity"):
        demo_client.explain(DEMO, SAMPLES / "digit_3_clean.png", method="saliency", polarity="sideways")
