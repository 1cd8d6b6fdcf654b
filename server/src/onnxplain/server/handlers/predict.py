"""Predict: scores and the top classes for each image."""

from __future__ import annotations

import numpy as np

from onnxplain.server.engine.cancel import CancelToken
from onnxplain.server.errors import InvalidInput
from onnxplain.server.handlers.forward import score_images
from onnxplain.server.handlers.inputs import prepare_images
from onnxplain.server.handlers.response_size import check_response_size, predict_response_bytes
from onnxplain.server.handlers.schema import ClassScore, ImagePrediction, PredictQuery, PredictResult
from onnxplain.server.repository.model import LoadedModel
from onnxplain.server.repository.registry import ModelRegistry
from onnxplain.server.settings import Limits

DEFAULT_TOP_K = 5


def predict(registry: ModelRegistry, query: PredictQuery, limits: Limits, token: CancelToken) -> PredictResult:
    if query.top_k < 0:
        raise InvalidInput(f"top_k must not be negative, got {query.top_k}")
    model = registry.get(query.model, query.version).head(query.output)
    prepared = prepare_images(model, query.images, limits, token)
    top_k = query.top_k or DEFAULT_TOP_K
    # The response must fit in one message: checked before the pass, or after it when only the pass tells the class
    # count (an output with a symbolic class dimension).
    if model.num_classes is not None:
        _check_size(model, len(prepared), model.num_classes, top_k, limits)
    scores = score_images(model, [image.tensor for image in prepared], token)
    if model.num_classes is None:
        _check_size(model, len(prepared), max(len(row) for row in scores), top_k, limits)
    return PredictResult(model.name, model.version, [_prediction(model, row, top_k) for row in scores])


def _check_size(model: LoadedModel, images: int, num_scores: int, top_k: int, limits: Limits) -> None:
    estimate = predict_response_bytes(model, images, num_scores, top_k)
    check_response_size(estimate, limits.max_message_bytes, "Predict", "send fewer images or ask for a smaller top_k")


def _prediction(model: LoadedModel, scores: np.ndarray, top_k: int) -> ImagePrediction:
    probabilities = model.to_probabilities(scores[None, :])[0]
    order = np.argsort(-scores, kind="stable")[: min(top_k, len(scores))]
    top = [ClassScore(int(i), model.label_of(int(i)), float(scores[i]), float(probabilities[i])) for i in order]
    return ImagePrediction(scores=scores, top=top)
