"""CLEAR maps (Kumar, Wong and Taylor 2017): per-class attentive responses R(x, c) by deconvnet back-projection of
every class, the dominant class per pixel C(x) = argmax_c R(x, c) and the dominant response D(x) = R(x, C(x)).

R(x, c) is the deconvnet projection summed over channels, signed (the authors' slides colour negative focus by class
too); the argmax runs over the signed responses, so a pixel's dominant class is the one it supports most. The maps of
the requested targets are returned as the attribution; C and D as the extras `dominant_class` and
`dominant_response`. One backward row per class, streamed in batches."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxplain.server.engine.backward.rulesets import get_ruleset
from onnxplain.server.engine.backward.support import DECONVNET
from onnxplain.server.engine.gradients import BackwardResult
from onnxplain.server.methods.base import Attribution, ExplainJob, Family
from onnxplain.server.methods.gradient_base import EveryClassMethod, channel_axis, for_every_class
from onnxplain.server.methods.registry import register


@register
class Clear(EveryClassMethod):
    name = "clear"
    family: Family = "relevance"
    description = "CLEAR maps: every class's deconvnet response, the dominant class per pixel and its response."
    ruleset = get_ruleset("deconvnet")
    walks = (DECONVNET,)

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        height, width = job.spatial_size
        dominant_class = np.zeros((height, width), dtype=np.int32)
        dominant_response = np.full((height, width), -np.inf, dtype=np.float32)
        targets = [int(t) for t in job.scorer.targets]
        responses: dict[int, np.ndarray] = {}

        def consume(classes: np.ndarray, result: BackwardResult) -> None:
            nonlocal dominant_class, dominant_response
            maps = result.input_gradient.sum(axis=channel_axis(job))
            for class_index, response in zip(classes, maps, strict=True):
                wins = response > dominant_response
                dominant_class = np.where(wins, class_index, dominant_class).astype(np.int32)
                dominant_response = np.where(wins, response, dominant_response)
                if int(class_index) in targets:
                    responses[int(class_index)] = response

        for_every_class(job, self.spec(job, params), consume)
        extras = {"dominant_class": dominant_class, "dominant_response": dominant_response.astype(np.float32)}
        return Attribution(np.stack([responses[t] for t in targets]).astype(np.float32), extras=extras)
