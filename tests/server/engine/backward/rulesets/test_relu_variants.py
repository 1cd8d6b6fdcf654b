"""Guided backprop and deconvnet rule sets against Captum's GuidedBackprop and Deconvolution on exported torch models
(a plain CNN with max pooling, and one with a residual sum)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop
from support.models import export
from support.vjp import assert_relative_close, onnx_vjp

from onnxplain.server.engine.backward.rulesets import get_ruleset

SHAPE = (3, 8, 8)
CLASSES = 4
TARGETS = [1, 3]


class PlainCNN(torch.nn.Module):
    """Conv-ReLU-MaxPool-Conv-ReLU-Flatten-Linear, one nn.ReLU module per use (Captum hooks modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.head = torch.nn.Linear(8 * 4 * 4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.head(torch.flatten(x, 1))


class ResidualCNN(torch.nn.Module):
    """A stem, a residual block (conv-relu-conv plus the skip, then ReLU) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.relu_stem = torch.nn.ReLU()
        self.conv1 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.relu_out = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.head = torch.nn.Linear(6 * 4 * 4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.relu_stem(self.stem(x))
        x = self.relu_out(skip + self.conv2(self.relu1(self.conv1(skip))))
        return self.head(torch.flatten(self.pool(x), 1))


def _seeded(module: torch.nn.Module) -> torch.nn.Module:
    """Fixed weights, scaled up so that activations (and the maps) are not tiny."""
    torch.manual_seed(0)
    for parameter in module.parameters():
        torch.nn.init.uniform_(parameter, -0.6, 0.6)
    return module.eval()


@pytest.mark.parametrize("model_class", [PlainCNN, ResidualCNN])
@pytest.mark.parametrize(
    ("ruleset", "captum_method"), [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)]
)
def test_matches_captum(model_class: type[torch.nn.Module], ruleset: str, captum_method: type) -> None:
    module = _seeded(model_class())
    x = np.random.default_rng(0).standard_normal((len(TARGETS), *SHAPE)).astype(np.float32)
    model = onnx.load_from_string(export(module, (1, *SHAPE)))
    seed = np.eye(CLASSES, dtype=np.float32)[TARGETS]
    (ours,) = onnx_vjp(model, {"input": x}, seed, ["input"], ruleset=get_ruleset(ruleset))
    reference = captum_method(module).attribute(torch.tensor(x, requires_grad=True), target=TARGETS).detach().numpy()
    assert_relative_close(ours, reference)


def test_relu_variants_differ_from_the_gradient() -> None:
    """The comparison above could pass with the plain Relu rule if no gradient ever turned negative: it does here."""
    module = _seeded(PlainCNN())
    x = np.random.default_rng(0).standard_normal((1, *SHAPE)).astype(np.float32)
    seed = np.eye(CLASSES, dtype=np.float32)[[2]]
    maps = {
        name: onnx_vjp(
            onnx.load_from_string(export(module, (1, *SHAPE))), {"input": x}, seed, ["input"], ruleset=get_ruleset(name)
        )[0]
        for name in ("gradient", "guided_backprop", "deconvnet")
    }
    scale = np.abs(maps["gradient"]).max()
    assert np.abs(maps["guided_backprop"] - maps["gradient"]).max() > 0.01 * scale
    assert np.abs(maps["deconvnet"] - maps["guided_backprop"]).max() > 0.01 * scale


def test_named_rule_sets() -> None:
    assert get_ruleset("guided_backprop").name == "guided_backprop"
    assert get_ruleset("deconvnet") != get_ruleset("guided_backprop")
    assert not get_ruleset("deconvnet").relevance
    with pytest.raises(ValueError, match="unknown rule set 'guided'"):
        get_ruleset("guided")
    with pytest.raises(ValueError, match="takes no parameters"):
        get_ruleset("deconvnet", epsilon=0.1)
