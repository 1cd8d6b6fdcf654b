"""The gradient peers on the torch model, one call per target as a user makes it: Captum's Saliency,
IntegratedGradients, LayerGradCam (upsampled to the input) and GuidedBackprop, and Zennit's LRP composite."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable

import numpy as np
import torch
from captum.attr import GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
from torch import nn

from peers import batch_of_one, on_host

PeerFactory = Callable[[nn.Module, np.ndarray, int, dict], Callable[[], np.ndarray]]


def saliency(module: nn.Module, image: np.ndarray, target: int, options: dict) -> Callable[[], np.ndarray]:
    explainer, inputs = Saliency(module), batch_of_one(module, image)
    return lambda: on_host(explainer.attribute(inputs, target=target, abs=True).amax(dim=1)[0])


def integrated_gradients(module: nn.Module, image: np.ndarray, target: int, options: dict) -> Callable[[], np.ndarray]:
    """Captum's defaults (Gauss-Legendre, zero baseline), the steps in batches of options["batch"]."""
    explainer, inputs = IntegratedGradients(module), batch_of_one(module, image)

    def run() -> np.ndarray:
        attribution = explainer.attribute(
            inputs, target=target, n_steps=options["steps"], internal_batch_size=options["batch"]
        )
        return on_host(attribution[0])

    return run


def grad_cam(module: nn.Module, image: np.ndarray, target: int, options: dict) -> Callable[[], np.ndarray]:
    """LayerGradCam on the module whose output the last global pool reads, upsampled bilinearly to the input."""
    inputs = batch_of_one(module, image)
    explainer = LayerGradCam(module, feature_layer(module, inputs))

    def run() -> np.ndarray:
        cam = explainer.attribute(inputs, target=target, relu_attributions=True)
        return on_host(LayerAttribution.interpolate(cam, tuple(image.shape[1:]), "bilinear")[0, 0])

    return run


def guided_backprop(module: nn.Module, image: np.ndarray, target: int, options: dict) -> Callable[[], np.ndarray]:
    explainer, inputs = GuidedBackprop(module), batch_of_one(module, image)
    return lambda: on_host(explainer.attribute(inputs, target=target)[0])


def lrp(module: nn.Module, image: np.ndarray, target: int, options: dict) -> Callable[[], np.ndarray]:
    """Zennit's EpsilonPlusFlat with BatchNorm merged (our default composite), relevance started at f_c on the
    target. The composite is registered once, on a copy of the module that only this peer uses: a call is the
    forward and backward through its hooks, not the canonizer's merge and the hooks' set-up."""
    composites, canonizers = zennit("composites"), zennit("canonizers")
    modified = copy.deepcopy(module)
    composites.EpsilonPlusFlat(canonizers=[canonizers.SequentialMergeBatchNorm()]).register(modified)
    inputs = batch_of_one(modified, image).requires_grad_(True)

    def run() -> np.ndarray:
        scores = modified(inputs)
        start = torch.zeros_like(scores)
        start[0, target] = scores[0, target].detach()
        (relevance,) = torch.autograd.grad(scores, inputs, start)
        return on_host(relevance[0])

    return run


def feature_layer(module: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """The innermost module whose output is the input of the last global average pool: Grad-CAM's layer."""
    pools = [m for m in module.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    outputs: dict[int, nn.Module] = {}
    seen: list[torch.Tensor] = []

    def note_output(layer: nn.Module, _: object, output: torch.Tensor) -> None:
        outputs.setdefault(id(output), layer)  # hooks of inner modules run first

    def note_input(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0])

    hooks = [layer.register_forward_hook(note_output) for layer in module.modules()]
    hooks.append(pools[-1].register_forward_pre_hook(note_input))
    try:
        with torch.no_grad():
            module(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs[id(seen[-1])]


def zennit(name: str) -> types.ModuleType:
    """A Zennit module without zennit/__init__, which imports torchvision (its canonizers for torchvision models):
    a torchvision build that does not match torch fails on import (the tests' support/zoo.py does the same)."""
    if "zennit" not in sys.modules:
        package = types.ModuleType("zennit")
        package.__path__ = list(importlib.util.find_spec("zennit").submodule_search_locations)
        sys.modules["zennit"] = package
    return importlib.import_module(f"zennit.{name}")
