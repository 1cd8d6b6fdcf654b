"""Guided Grad-CAM (Selvaraju et al. 2017), as Captum's GuidedGradCam: guided backprop times the ReLU'd Grad-CAM
upsampled with nearest neighbours. Two backward graphs share nothing but the image: 2 forward, 2 backward passes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2

from onnxplain.server.engine.backward.support import FEATURE_MAP, GUIDED_BACKPROP
from onnxplain.server.engine.gradients import BackwardSpec
from onnxplain.server.methods.base import Attribution, ExplainJob
from onnxplain.server.methods.cam import GradCam, upsampled
from onnxplain.server.methods.gradient_base import target_gradients
from onnxplain.server.methods.registry import register
from onnxplain.server.methods.relu_variants import GuidedBackprop


@register
class GuidedGradCam(GradCam):
    name = "guided_grad_cam"
    description = "Guided backprop times the Grad-CAM map (nearest upsampling, as Captum), input-shaped."
    walks = (FEATURE_MAP, GUIDED_BACKPROP)

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        """Grad-CAM's rows and guided backprop's, one per target each."""
        return 2 * job.scorer.target_count + 1

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        activations, gradients = self.read_layer(job, params)
        weights = self.channel_weights(activations, gradients)
        coarse = (weights[:, :, None, None] * activations).sum(axis=1).clip(min=0.0)
        cams = upsampled(coarse, job.spatial_size, cv2.INTER_NEAREST)
        probability = job.scorer.space == "probability"
        guided = target_gradients(job, BackwardSpec(GuidedBackprop.ruleset, probability=probability)).input_gradient
        return Attribution(guided * job.spatial_to_input(cams))
