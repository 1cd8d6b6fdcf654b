"""Small torch models with the structure of real classifiers (ResNet, MobileNetV3, VGG, a TensorFlow-style NHWC
model), for whole-model tests of the gradient methods against torch autograd, Captum and Zennit; and torchvision's own
architectures with random weights (TORCHVISION), at sizes CI can run.

Every ReLU is its own nn.ReLU module, none in place (Captum's guided backprop, deconvnet and LRP hook modules), and
residual sums are modules (ResidualAdd) so Captum's LRP can put its rule on them. Weights are drawn from a fixed seed
at a scale that keeps activations near 1 through the depth, and BatchNorm statistics are far from the identity:
default-initialised models have tiny gradients that make comparisons weak. Also: `zennit`, which imports Zennit's
modules without its package __init__.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CLASSES = 10


class ResidualAdd(nn.Module):
    """a + b as a module: exports as Add; Captum's LRP splits relevance over the operands only for a module with a
    rule (a functional sum would hand each operand the whole relevance)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-BN-ReLU-conv-BN plus the skip (a strided 1x1 conv + BN when the shape changes)."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
        self.add = ResidualAdd()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        branch = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.add(branch, skip))


class ResNetStyle(nn.Module):
    """torchvision's ResNet in miniature: stem conv k7 s2 p3 + BN + ReLU + MaxPool k3 s2 p1 (overlapping windows),
    an identity block and a strided block with a 1x1 downsample, global average pooling, a linear head."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, CLASSES)
        initialise(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SqueezeExcite(nn.Module):
    """MobileNetV3's gate: AdaptiveAvgPool -> 1x1 conv -> ReLU -> 1x1 conv -> Hardsigmoid, times the input."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.avgpool(x)))))


class MobileNetV3Style(nn.Module):
    """MobileNetV3 in miniature: Conv+BN+Hardswish stem; a depthwise block with ReLU and squeeze-excite; an inverted
    residual (1x1 expand + Hardswish, depthwise 5x5 s2 + ReLU6, squeeze-excite, 1x1 project, with a Hardtanh on the
    way); a 1x1 conv + Hardswish; global pooling and the Linear-Hardswish-Dropout-Linear head."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.depthwise = nn.Sequential(
            nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(), SqueezeExcite(8, 4)
        )
        self.project1 = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.add = ResidualAdd()
        self.inverted = nn.Sequential(
            nn.Conv2d(8, 24, 1, bias=False),
            nn.BatchNorm2d(24),
            nn.Hardswish(),
            nn.Conv2d(24, 24, 5, 2, 2, groups=24, bias=False),
            nn.BatchNorm2d(24),
            nn.ReLU6(),
            SqueezeExcite(24, 8),
            nn.Conv2d(24, 16, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.Hardtanh(-2.0, 2.0),
        )
        self.last = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(32, 24), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(24, CLASSES))
        initialise(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.add(x, self.project1(self.depthwise(x)))
        x = self.last(self.inverted(x))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


class VGGStyle(nn.Module):
    """VGG in miniature: conv-BN-ReLU stacks with max pooling, flatten, Linear-ReLU-Dropout-Linear. The flatten is
    functional: Captum's LRP refuses an nn.Flatten module."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            return [nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU()]

        self.features = nn.Sequential(
            *block(3, 8), *block(8, 8), nn.MaxPool2d(2), *block(8, 16), *block(16, 16), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, CLASSES))
        initialise(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class TFStyle(nn.Module):
    """What TensorFlow models look like once converted: NHWC input transposed to NCHW, a depthwise conv with TF's
    SAME padding at stride 2 (asymmetric: nothing before, one after, written as F.pad + an unpadded conv), ReLU6,
    average pooling, back to NHWC and a mean over the spatial axes (ReduceMean), a linear head."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.relu6_1 = nn.ReLU6()
        self.depthwise = nn.Conv2d(12, 12, 3, 2, groups=12)
        self.pointwise = nn.Conv2d(12, 16, 1)
        self.relu6_2 = nn.ReLU6()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(16, CLASSES)
        initialise(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu6_1(self.conv(x.permute(0, 3, 1, 2)))
        x = self.relu6_2(self.pointwise(self.depthwise(F.pad(x, (0, 1, 0, 1)))))
        x = self.pool(x).permute(0, 2, 3, 1)
        return self.fc(x.mean(dim=(1, 2)))


class ViTStyle(nn.Module):
    """A one-block vision transformer: patch embedding (Conv), a class token expanded over the batch (the legacy
    exporter writes the expand through shape arithmetic ONNX shape inference cannot follow), positions, a pre-norm
    encoder layer (attention Softmax, MatMul, LayerNorm, exact GELU), the class token through LayerNorm and a head."""

    def __init__(self, seed: int = 0, size: int = 32, patch: int = 8, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.positions = nn.Parameter(torch.zeros(1, (size // patch) ** 2 + 1, dim))
        # The attention's packed projection is not a Linear that `initialise` reaches: seed its default init.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.block = nn.TransformerEncoderLayer(
                dim, 4, 2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)
        initialise(self, seed)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(seed + 1)
            self.cls.copy_(torch.randn(self.cls.shape, generator=generator))
            self.positions.copy_(torch.randn(self.positions.shape, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.positions
        return self.head(self.norm(self.block(tokens))[:, 0])


class ConvNeXtStyle(nn.Module):
    """A ConvNeXt block: patchify stem, depthwise 7x7, channels-last LayerNorm and GELU MLP (permute there and back),
    a residual sum, a spatial mean and a head."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, 4)
        self.depthwise = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.norm = nn.LayerNorm(16)
        self.expand = nn.Linear(16, 64)
        self.project = nn.Linear(64, 16)
        self.head = nn.Linear(16, CLASSES)
        initialise(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        y = self.project(F.gelu(self.expand(y))).permute(0, 3, 1, 2)
        return self.head((x + y).mean(dim=(2, 3)))


class SamePaddedConv(nn.Conv2d):
    """timm's Conv2dSame: pads computed from the input's size at run time, the odd pixel at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        (kernel, _), (stride, _) = self.kernel_size, self.stride
        pad_h = torch.clamp(
            (torch.div(height + stride - 1, stride, rounding_mode="floor") - 1) * stride + kernel - height, min=0
        )
        pad_w = torch.clamp(
            (torch.div(width + stride - 1, stride, rounding_mode="floor") - 1) * stride + kernel - width, min=0
        )
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


class SamePaddedNet(nn.Module):
    """Two SAME-padded strided convolutions (pads computed from the input's size), ReLUs, a max pool, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            SamePaddedConv(3, 8, 3, 2), nn.ReLU(), SamePaddedConv(8, 8, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        self.head = nn.Linear(8, CLASSES)
        initialise(self, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class LrnStyle(nn.Module):
    """Caffe's AlexNet/GoogLeNet stem in miniature: conv, ReLU, local response normalisation, max pool, conv, ReLU,
    LRN again, global average pooling, a linear head."""

    def __init__(self, seed: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, 2, 2),
            nn.ReLU(),
            nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0),
            nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(8, 12, 3, 1, 1),
            nn.ReLU(),
            nn.LocalResponseNorm(3),
        )
        self.head = nn.Linear(12, CLASSES)
        initialise(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def initialise(module: nn.Module, seed: int) -> None:
    """He-scaled weights (activations stay near unit scale through the depth), small biases, and BatchNorm
    statistics away from the identity, all from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for child in module.modules():
            if isinstance(child, (nn.Conv2d, nn.Linear)):
                fan_in = child.weight[0].numel()
                child.weight.copy_(torch.randn(child.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                if child.bias is not None:
                    child.bias.copy_(0.1 * torch.randn(child.bias.shape, generator=generator))
            elif isinstance(child, nn.BatchNorm2d):
                count = child.num_features
                child.weight.copy_(0.5 + torch.rand(count, generator=generator))
                child.bias.copy_(0.2 * torch.randn(count, generator=generator))
                child.running_mean.copy_(0.2 * torch.randn(count, generator=generator))
                child.running_var.copy_(0.5 + torch.rand(count, generator=generator))
    module.eval()


@dataclass(frozen=True)
class Architecture:
    """A torchvision architecture: its constructor (random weights, CLASSES outputs) and a small image side: the
    smallest at which its last feature map is still more than one pixel (so the CAM family has a map to show), or
    the architecture's own minimum (Inception-v3's 75, where that map is 1x1)."""

    build: Callable[[types.ModuleType], nn.Module]
    size: int

    def module(self, seed: int = 0) -> nn.Module:
        """The model in eval mode: convolution, dense and BatchNorm parameters as `initialise` draws them from `seed`
        (the constructors' own leave BatchNorm at the identity, which exports fold away untested), the others
        (LayerNorm, attention projections, position tables) from the constructors' initialisation under the same
        seed."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module = self.build(torchvision_models())
        initialise(module, seed)
        return module

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)


TORCHVISION: dict[str, Architecture] = {
    "resnet18": Architecture(lambda tv: tv.resnet18(weights=None, num_classes=CLASSES), 64),
    "mobilenet_v2": Architecture(lambda tv: tv.mobilenet_v2(weights=None, num_classes=CLASSES), 64),
    "mobilenet_v3_small": Architecture(lambda tv: tv.mobilenet_v3_small(weights=None, num_classes=CLASSES), 64),
    "efficientnet_b0": Architecture(lambda tv: tv.efficientnet_b0(weights=None, num_classes=CLASSES), 64),
    "regnet_x_400mf": Architecture(lambda tv: tv.regnet_x_400mf(weights=None, num_classes=CLASSES), 64),
    "densenet121": Architecture(lambda tv: tv.densenet121(weights=None, num_classes=CLASSES), 64),
    "squeezenet1_1": Architecture(lambda tv: tv.squeezenet1_1(weights=None, num_classes=CLASSES), 48),
    "shufflenet_v2_x0_5": Architecture(lambda tv: tv.shufflenet_v2_x0_5(weights=None, num_classes=CLASSES), 64),
    "googlenet": Architecture(
        lambda tv: tv.googlenet(weights=None, num_classes=CLASSES, aux_logits=False, init_weights=True), 64
    ),
    "inception_v3": Architecture(
        lambda tv: tv.inception_v3(weights=None, num_classes=CLASSES, aux_logits=False, init_weights=True), 75
    ),
    "mnasnet0_5": Architecture(lambda tv: tv.mnasnet0_5(weights=None, num_classes=CLASSES), 64),
    # Layer scale 0.5 instead of 1e-6, which all but removes each block's branch from the output and its gradient.
    "convnext_tiny": Architecture(lambda tv: tv.convnext_tiny(weights=None, num_classes=CLASSES, layer_scale=0.5), 64),
    # The transformers in small configurations: two blocks each, narrow, on 32-pixel images.
    "vit": Architecture(
        lambda tv: tv.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=CLASSES
        ),
        32,
    ),
    "swin": Architecture(
        lambda tv: tv.SwinTransformer(
            patch_size=[4, 4],
            embed_dim=16,
            depths=[2, 2],
            num_heads=[2, 2],
            window_size=[4, 4],
            stochastic_depth_prob=0.0,
            num_classes=CLASSES,
        ),
        32,
    ),
    "maxvit": Architecture(
        lambda tv: tv.MaxVit(
            input_size=(32, 32),
            stem_channels=16,
            partition_size=4,
            block_channels=[16, 32],
            block_layers=[1, 1],
            head_dim=8,
            stochastic_depth_prob=0.0,
            num_classes=CLASSES,
        ),
        32,
    ),
}


def cheap_parameters(size: int) -> dict[str, dict[str, object]]:
    """Parameters that keep each method's call on a `size`-pixel image small (occlusion's windows a quarter of the
    side, a few samples, steps and masks); methods left out run at their defaults."""
    window = max(8, size // 4)
    return {
        "integrated_gradients": {"steps": 4},
        "smoothgrad": {"samples": 3},
        "smoothgrad_sq": {"samples": 3},
        "vargrad": {"samples": 3},
        "rise": {"num_masks": 64},
        "kernel_shap": {"num_samples": 40, "n_segments": 8},
        "lime": {"num_samples": 40, "n_segments": 8},
        "feature_ablation": {"n_segments": 8},
        "feature_visualization": {"steps": 3},
        "occlusion": {"window": window, "stride": window},
        "prediction_difference": {"window": window, "stride": window, "num_samples": 2},
    }


def torchvision_models() -> types.ModuleType:
    """torchvision.models without torchvision/__init__, which registers torchvision's compiled ops: the wheel pip
    pairs with torch's CPU build is a CUDA build whose ops library does not load here, and the architectures need
    none of its ops."""
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        package = types.ModuleType("torchvision")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec  # the dynamo exporter asks for it (and then finds none of torchvision's ops)
        sys.modules["torchvision"] = package
    return importlib.import_module("torchvision.models")


def zennit(module: str) -> types.ModuleType:
    """A Zennit module without zennit/__init__, which imports its torchvision canonizers and so torchvision: the
    tests need neither, and a torchvision build that does not match torch's fails on import."""
    if "zennit" not in sys.modules:
        package = types.ModuleType("zennit")
        package.__path__ = list(importlib.util.find_spec("zennit").submodule_search_locations)
        sys.modules["zennit"] = package
    return importlib.import_module(f"zennit.{module}")
