"""Score-CAM (Wang et al. 2020), as pytorch-grad-cam computes it: each channel of the feature map, upsampled to the
input and min-max scaled to [0, 1], masks the image; the target's scores on the masked images, softmaxed over the
channels, weigh the channels. One forward pass per channel (2048 for a ResNet-50's last block), batched."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxplain.server.methods.base import Attribution, ExplainJob, Progress
from onnxplain.server.methods.cam import CamMethod, cam_maps
from onnxplain.server.methods.gradient_base import one_hot
from onnxplain.server.methods.perturbation import check_pass_limit
from onnxplain.server.methods.registry import register


@register
class ScoreCam(CamMethod):
    name = "score_cam"
    description = "Score-CAM: channels weighted by the softmax of the target's score on images they mask."
    single_pass = False  # one forward pass per channel of the layer

    def forward_passes(self, job: ExplainJob, params: Mapping[str, Any]) -> int:
        """One pass per channel of the layer, which only its graph knows: the layer is read once to count them."""
        return len(self._activations(job, params)) + 1

    def attribute(self, job: ExplainJob, params: dict[str, Any]) -> Attribution:
        activations = self._activations(job, params)
        check_pass_limit(job, len(activations), "layer")
        height, width = job.spatial_size
        # pytorch-grad-cam upsamples the masks with UpsamplingBilinear2d, i.e. aligned corners. Built a batch at a
        # time: all channels' masks at once are channels x height x width float64 (820 MB for a ResNet-50 at 224).
        rows, columns = _aligned(height, activations.shape[1]), _aligned(width, activations.shape[2])
        batches = []
        for start in range(0, len(activations), job.batch_size):
            masks = np.einsum("hy,cyx,wx->chw", rows, activations[start : start + job.batch_size], columns)
            low = masks.min(axis=(1, 2), keepdims=True)
            high = masks.max(axis=(1, 2), keepdims=True)
            masks = (masks - low) / np.where(high > low, high - low, 1.0)
            batches.append(job.scorer(job.image[None] * job.spatial_to_input(masks)))
            if job.progress is not None:
                job.progress(Progress(start + len(batches[-1]), len(activations)))
        scores = np.concatenate(batches)  # (channels, T)
        shifted = np.exp(scores - scores.max(axis=0, keepdims=True))
        weights = (shifted / shifted.sum(axis=0, keepdims=True)).T
        targets = len(job.scorer.targets)
        return Attribution(cam_maps(job, np.repeat(activations[None], targets, axis=0), weights, params["relu"]))

    def _activations(self, job: ExplainJob, params: Mapping[str, Any]) -> np.ndarray:
        """(C, h, w): only the activation is needed, so one row with a zero seed."""
        return self.read_layer(job, dict(params), 0 * one_hot(job, job.scorer.targets[:1]))[0][0]


def _aligned(size: int, source: int) -> np.ndarray:
    """(size, source) bilinear interpolation weights with aligned corners."""
    positions = np.linspace(0.0, source - 1.0, size)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, source - 1)
    fraction = positions - low
    weights = np.zeros((size, source))
    np.add.at(weights, (np.arange(size), low), 1.0 - fraction)
    np.add.at(weights, (np.arange(size), high), fraction)
    return weights
