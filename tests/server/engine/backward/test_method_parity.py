"""Gradient methods through the real service on whole exported models (tests/support/zoo.py, legacy exporter, opset
17) equal the peer libraries on the same torch model, to 1e-4 of max|reference|: guided backprop, deconvnet and
integrated gradients (Captum) and Grad-CAM (Captum's LayerGradCam) on the ResNet- and MobileNetV3-style models,
Grad-CAM++ (pytorch-grad-cam's formula); LRP-ε (Captum's LRP) on the ResNet- and VGG-style models, and the
epsilon_plus and epsilon_alpha2_beta1 composites (Zennit, with its BatchNorm canonizer) on the VGG-style model, served
with its BatchNormalization nodes so the server's own canonizer is the one under test.

Captum's LRP is left out on the MobileNetV3-style model: it has no rule for Hardswish, Hardsigmoid, ReLU6 or Hardtanh
modules, and the squeeze-excite product is a functional Mul its hooks never see (it would split the relevance by the
product's gradient, where our rule sends it all to the features)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    LRP,
    Deconvolution,
    GuidedBackprop,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
)
from captum.attr._utils.lrp_rules import EpsilonRule
from support import references
from support.models import export, write_model
from support.servers import serving_client
from support.vjp import assert_relative_close
from support.zoo import MobileNetV3Style, ResidualAdd, ResNetStyle, VGGStyle, zennit

from onnxplain.client import Client

# Captum's guided backprop and deconvnet warn on every call that they hook ReLU modules.
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")

TARGETS = [2, 7]

# name -> (builder, image shape, the module whose output is the last feature map, the one the service reads by default)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, int, int], Callable]] = {
    "resnet": (ResNetStyle, (3, 40, 40), lambda m: m.layer2.relu2),
    "mobilenet_v3": (MobileNetV3Style, (3, 40, 40), lambda m: m.last[2]),
    "vgg": (VGGStyle, (3, 32, 32), lambda m: m.features[-1]),
}
CNNS = ["resnet", "mobilenet_v3"]


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Client]:
    repository = tmp_path_factory.mktemp("repository")
    for name, (build, shape, _) in MODELS.items():
        write_model(repository, name, export(build(), (1, *shape), keep_batch_norm=name == "vgg"))
    with serving_client(repository) as connected:
        yield connected


def image_for(model: str) -> np.ndarray:
    return np.random.default_rng(3).normal(size=MODELS[model][1]).astype(np.float32)


def explain(client: Client, model: str, method: str, **params) -> np.ndarray:
    return client.explain(model, image_for(model), method=method, target=TARGETS, **params).attribution


def per_target(model: str, attribute: Callable[[torch.nn.Module, torch.Tensor, int], torch.Tensor]) -> np.ndarray:
    """(T, ...) reference maps, each from a fresh torch model (Captum and Zennit leave hooks and rules on it)."""
    maps = []
    for target in TARGETS:
        inputs = torch.from_numpy(image_for(model))[None].requires_grad_()
        maps.append(attribute(MODELS[model][0](), inputs, target)[0].detach().numpy())
    return np.stack(maps)


@pytest.mark.parametrize(("method", "reference"), [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)])
@pytest.mark.parametrize("model", CNNS)
def test_relu_variants_equal_captum(client, model, method, reference) -> None:
    """Captum swaps the backward of nn.ReLU modules only; ReLU6 and Hardtanh (Clip) keep their gradient, as ours do."""
    ours = explain(client, model, method, attribution_shape="input")
    assert_relative_close(ours, per_target(model, lambda m, x, t: reference(m).attribute(x, target=t)))


@pytest.mark.parametrize("model", CNNS)
def test_integrated_gradients_equal_captum(client, model) -> None:
    ours = explain(client, model, "integrated_gradients", attribution_shape="input", steps=16)
    expected = per_target(model, lambda m, x, t: IntegratedGradients(m).attribute(x, target=t, n_steps=16))
    assert_relative_close(ours, expected)


@pytest.mark.parametrize("model", CNNS)
def test_grad_cam_equals_captum(client, model) -> None:
    size = MODELS[model][1][1:]

    def grad_cam(m: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
        cam = LayerGradCam(m, MODELS[model][2](m)).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, size, "bilinear")[:, 0]

    assert_relative_close(explain(client, model, "grad_cam"), per_target(model, grad_cam))


def layer_and_gradient(model: str, target: int) -> tuple[np.ndarray, np.ndarray]:
    """The last feature map A (C, h, w) and ∂logit/∂A, by torch autograd in float64."""
    module = MODELS[model][0]().double()
    stored = []
    MODELS[model][2](module).register_forward_hook(lambda _m, _i, output: stored.append(output))
    logits = module(torch.from_numpy(image_for(model)).double()[None])
    (gradient,) = torch.autograd.grad(logits[0, target], stored[0])
    return stored[0][0].detach().numpy(), gradient[0].numpy()


@pytest.mark.parametrize("model", CNNS)
def test_grad_cam_pp_follows_pytorch_grad_cam(client, model) -> None:
    maps = np.stack([references.grad_cam_pp(*layer_and_gradient(model, t)) for t in TARGETS])
    expected = F.interpolate(torch.from_numpy(maps)[:, None], size=MODELS[model][1][1:], mode="bilinear")[:, 0]
    assert_relative_close(explain(client, model, "grad_cam_pp"), expected.numpy())


def captum_lrp(m: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Captum's LRP (ε = 1e-9 on every layer). A residual sum gets the ε rule too, which splits the relevance over
    the operands in proportion to them (our Add rule); Captum's default for a module it has no rule for is to refuse
    the model. BatchNorm under the ε rule gives what folding it into the convolution gives."""
    for child in m.modules():
        if isinstance(child, ResidualAdd):
            child.rule = EpsilonRule()
    return LRP(m).attribute(x, target=target)


@pytest.mark.parametrize("model", ["resnet", "vgg"])
def test_lrp_epsilon_equals_captum(client, model) -> None:
    ours = explain(client, model, "lrp", attribution_shape="input", composite="epsilon")
    assert_relative_close(ours, per_target(model, captum_lrp))


ZENNIT_COMPOSITES = {"epsilon_plus": "EpsilonPlus", "epsilon_alpha2_beta1": "EpsilonAlpha2Beta1"}


@pytest.mark.parametrize("composite", list(ZENNIT_COMPOSITES))
def test_lrp_composites_equal_zennit_on_vgg(client, composite) -> None:
    """The service starts relevance at f_c on the target (as Captum does); Zennit at the output gradient it is given,
    so it is given f_c·onehot(c)."""
    ours = explain(client, "vgg", "lrp", attribution_shape="input", composite=composite)
    zcomposites, zcanonizers = zennit("composites"), zennit("canonizers")

    def relevance(m: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
        composite_class = getattr(zcomposites, ZENNIT_COMPOSITES[composite])
        with composite_class(canonizers=[zcanonizers.SequentialMergeBatchNorm()]).context(m) as modified:
            scores = modified(x)
            start = torch.zeros_like(scores)
            start[0, target] = scores[0, target].detach()
            (result,) = torch.autograd.grad(scores, x, start)
        return result

    assert_relative_close(ours, per_target("vgg", relevance))
