"""Class activation maps on one short base (pytorch-grad-cam's shape): read a feature map A and its gradient dA in
one forward+backward run (the backward stops at the layer), weigh the channels, sum, ReLU, upsample bilinearly to
the input. Variants override `channel_weights` only. The layer defaults to the last 4-D feature map before the
classifier head, found in the graph; any 4-D tensor can be named with `layer`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from onnxplain.server.engine.backward.support import CAM_HEAD, FEATURE_MAP
from onnxplain.server.engine.gradients import BackwardSession, BackwardSpec
from onnxplain.server.errors import FailedPrecondition
from onnxplain.server.methods.base import Attribution, ExplainJob, Family
from onnxplain.server.methods.gradient_base import GradientMethod, image_rows, session_for, target_rows
from onnxplain.server.methods.parameters import Param
from onnxplain.server.methods.registry import register

LAYER_PARAM = Param("layer", "str", "", "Name of the 4-D tensor to read; empty picks the last feature map.")
RELU_PARAM = Param("relu", "bool", True, "Keep only positive evidence (pytorch-grad-cam, TorchRay; Captum: off).")


class CamMethod(GradientMethod):
    family: Family = "cam"
    single_pass = True
    walks = (FEATURE_MAP,)

    def walks_for(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        # A layer the request names replaces the default feature map; its path is checked when its graph is built.
        return (
            tuple(walk for walk in self.walks if walk not in (FEATURE_MAP, CAM_HEAD))
            if params.get("layer")
            else self.walks
        )

    parameters = (LAYER_PARAM, RELU_PARAM)

    def spec(self, job: ExplainJob, params: dict[str, Any]) -> BackwardSpec:
        return BackwardSpec(
            input_gradient=False,
            cam_layer=True,
            layer=params["layer"] or None,
            probability=job.scorer.space == "probability",
        )

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        activations, gradients = self.read_layer(job, params)
        return Attribution(cam_maps(job, activations, self.channel_weights(activations, gradients), params["relu"]))

    def read_layer(
        self, job: ExplainJob, params: dict[str, Any], seeds: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The layer's activations and gradients, (rows, C, h, w) each, for the image under each seed row (one row
        per target by default)."""
        session = session_for(job, self.spec(job, params))
        result = target_rows(job, session) if seeds is None else image_rows(job, session, seeds)
        return channels_first(session, result.layer), channels_first(session, result.layer_gradient)

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """(T, C) weights from (T, C, h, w) activations and gradients."""
        raise NotImplementedError


def channels_first(session: BackwardSession, layer: np.ndarray) -> np.ndarray:
    """(T, C, h, w) from the layer's rows in whatever axis order the graph keeps them."""
    feature_map = session.feature_map
    return np.moveaxis(layer, (feature_map.channel_axis, *feature_map.spatial_axes), (1, 2, 3)).astype(np.float64)


def cam_maps(job: ExplainJob, activations: np.ndarray, weights: np.ndarray, relu: bool) -> np.ndarray:
    """Σ_k w_k A_k per target, ReLU'd when asked, resized bilinearly to the input's (H, W)."""
    maps = np.einsum("tc,tchw->thw", weights, activations)
    if relu:
        maps = np.maximum(maps, 0.0)
    return upsampled(maps, job.spatial_size)


def upsampled(maps: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    height, width = size
    return np.stack([cv2.resize(m.astype(np.float32), (width, height), interpolation=interpolation) for m in maps])


@register
class Cam(CamMethod):
    name = "cam"
    description = "CAM (Zhou et al. 2016) for global-average-pool + dense heads: Σ_k w_k^c A_k."
    walks = (FEATURE_MAP, CAM_HEAD)

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        # Behind global average pooling and a dense layer, ∂f_c/∂A_k(i,j) = w_k^c / (h·w) at every position: a
        # gradient that varies over positions means another head, where CAM is not defined.
        spread = np.abs(gradients - gradients.mean(axis=(2, 3), keepdims=True)).max()
        if spread > 1e-4 * max(float(np.abs(gradients).max()), 1e-30):
            raise FailedPrecondition(
                "cam needs a global-average-pool + dense head after the layer (its gradient varies over positions "
                "here); use grad_cam"
            )
        return gradients.sum(axis=(2, 3))


@register
class GradCam(CamMethod):
    name = "grad_cam"
    description = "Grad-CAM (Selvaraju et al. 2017): channels weighted by their spatially averaged gradient."

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return gradients.mean(axis=(2, 3))


@register
class GradCamPlusPlus(CamMethod):
    name = "grad_cam_pp"
    description = "Grad-CAM++ (Chattopadhay et al. 2018, eq. 19), as pytorch-grad-cam computes it."

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        squared, cubed = gradients**2, gradients**3
        activation_sums = activations.sum(axis=(2, 3))[:, :, None, None]
        alphas = squared / (2 * squared + activation_sums * cubed + 1e-6)
        alphas = np.where(gradients != 0, alphas, 0.0)
        return (np.maximum(gradients, 0.0) * alphas).sum(axis=(2, 3))
