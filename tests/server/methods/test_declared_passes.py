"""Every method declares its forward passes before it runs (AttributionMethod.forward_passes), for requests that add
many explanations up (Evaluate): the declaration is never below what the method then really runs, counted by the
scorer, and at most the image's one scoring pass above it."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from onnxplain.server.demo import REPOSITORY, SAMPLES
from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.handlers.attribution import explain_job, run_method
from onnxplain.server.methods.base import Scorer
from onnxplain.server.methods.parameters import parse_parameters
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.repository.loader import load_model
from onnxplain.server.repository.model import LoadedModel, ModelSource
from onnxplain.server.settings import ServerSettings

# Small enough for CI; every parameter that sets a count is given, the others keep their defaults.
PARAMS: dict[str, dict[str, Any]] = {
    "rise": {"num_masks": 300},
    "lime": {"num_samples": 120, "n_segments": 20},
    "kernel_shap": {"num_samples": 80, "n_segments": 12},
    "feature_ablation": {"n_segments": 20},
    "prediction_difference": {"num_samples": 3},
    "smoothgrad": {"samples": 5},
    "smoothgrad_sq": {"samples": 5},
    "vargrad": {"samples": 5},
    "integrated_gradients": {"steps": 9},
    "feature_visualization": {"steps": 3},
}
SETTINGS = ServerSettings(model_repository=REPOSITORY, device="cpu", threads=1)


@pytest.fixture(scope="module")
def digits() -> LoadedModel:
    return load_model(ModelSource("digits", "1", REPOSITORY / "digits" / "1" / "model.onnx"), SETTINGS)


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    picture = cv2.imread(str(SAMPLES / "digit_3_clean.png"), cv2.IMREAD_GRAYSCALE)
    return (cv2.resize(picture, (28, 28), interpolation=cv2.INTER_AREA).astype(np.float32) / 255)[None]


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("targets", [[3], [3, 8, 5]])
def test_a_method_runs_no_more_passes_than_it_declares(digits, digit, name: str, targets: list[int]) -> None:
    method = METHODS[name]
    scores = digits.session.run(digit[None])[0]
    params = parse_parameters(method.parameters, PARAMS.get(name, {}), name)
    declared = method.forward_passes(
        explain_job(digit, scores, Scorer(digits, targets, "raw", CancelToken()), SETTINGS), params
    )
    scorer = Scorer(digits, targets, "raw", CancelToken())
    run_method(method, dict(params), digit, scores, scorer, SETTINGS)
    assert scorer.passes.forward <= declared <= scorer.passes.forward + 1, (scorer.passes.forward, declared)
