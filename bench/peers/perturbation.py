"""The perturbation peers: Captum's Occlusion, and RISE as a user writes it in PyTorch (the official recipe:
random binary grids upsampled bilinearly and cropped at a random shift, masked batches, scores times masks)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from torch import nn

from peers import batch_of_one, on_host


def torch_rise(
    module: nn.Module,
    image: np.ndarray,
    target: int,
    num_masks: int,
    batch: int,
    grid: int = 7,
    keep: float = 0.5,
    seed: int = 0,
) -> Callable[[], np.ndarray]:
    """RISE's (H, W) map of `target`: masks drawn in torch batch by batch, fill 0, normalised by N * keep."""
    inputs = batch_of_one(module, image)
    device = inputs.device
    height, width = image.shape[1:]
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    upsampled = ((grid + 1) * cell_h, (grid + 1) * cell_w)

    def run() -> np.ndarray:
        generator = torch.Generator(device).manual_seed(seed)
        saliency = torch.zeros(height * width, device=device)
        with torch.inference_mode():
            for start in range(0, num_masks, batch):
                count = min(batch, num_masks - start)
                grids = (torch.rand(count, 1, grid, grid, generator=generator, device=device) < keep).float()
                large = F.interpolate(grids, size=upsampled, mode="bilinear", align_corners=False)[:, 0]
                rows = torch.randint(0, cell_h, (count, 1), generator=generator, device=device)
                cols = torch.randint(0, cell_w, (count, 1), generator=generator, device=device)
                rows, cols = rows + torch.arange(height, device=device), cols + torch.arange(width, device=device)
                masks = large[torch.arange(count, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
                scores = module(inputs * masks[:, None])[:, target]
                saliency += scores @ masks.reshape(count, -1)
        return on_host((saliency / (num_masks * keep)).reshape(height, width))

    return run


def captum_occlusion(
    module: nn.Module, image: np.ndarray, target: int, window: int, stride: int, per_eval: int
) -> Callable[[], np.ndarray]:
    """Captum's Occlusion map (H, W) of `target`: square windows over every channel, baseline 0."""
    occlusion = Occlusion(module)
    inputs = batch_of_one(module, image)
    channels = image.shape[0]

    def run() -> np.ndarray:
        with torch.inference_mode():
            attribution = occlusion.attribute(
                inputs,
                sliding_window_shapes=(channels, window, window),
                strides=(channels, stride, stride),
                baselines=0.0,
                target=target,
                perturbations_per_eval=per_eval,
            )
        return on_host(attribution[0, 0])

    return run
