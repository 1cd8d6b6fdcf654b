"""What a user would run instead of onnxplain: Captum, Zennit and a straightforward RISE, on the torch model.

Every peer runs where the module's weights are (the CPU, or the GPU under `run.py --device cuda`) and hands back a
numpy array: the copy to the host also waits for the GPU's queued work, so a peer's time is its whole work, as ours
is (ONNX Runtime returns host arrays)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def batch_of_one(module: nn.Module, image: np.ndarray) -> torch.Tensor:
    """The image as a batch of one on the module's device."""
    return torch.from_numpy(image)[None].to(next(module.parameters()).device)


def on_host(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()
