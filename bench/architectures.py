"""The benchmark's torch architectures, written by hand (torchvision is not a dependency): a ResNet-50, a
MobileNetV3-Large and a tiny CNN, with seeded random weights. Speed depends on the architecture, not on what the
weights learned. models.py exports them; its export cache is keyed on this file's text, so editing a definition
re-exports it.
"""

from __future__ import annotations

import torch
from torch import nn

SEED = 0
CALIBRATION_IMAGES = 8


# ResNet-50 (He et al. 2016): bottleneck blocks [3, 4, 6, 3], widths 64..2048.


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(in_channels, width, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(width, width, 3, stride=stride),
            nn.ReLU(inplace=True),
            *_conv_bn(width, out_channels, 1),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride=stride))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet50(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 64, 7, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, in_channels = [], 64
        for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(Bottleneck(in_channels, width, stride))
                in_channels = width * Bottleneck.expansion
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


# MobileNetV3-Large (Howard et al. 2019): inverted residuals, depthwise convs, squeeze-excite, HardSwish.

# kernel, expanded width, output width, squeeze-excite, HardSwish (else ReLU), stride
MOBILENET_V3_LARGE = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = _divisible_by_8(channels // 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, squeezed, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, channels, 1),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    def __init__(
        self, in_channels: int, kernel: int, expanded: int, out_channels: int, excite: bool, hswish: bool, stride: int
    ) -> None:
        super().__init__()
        activation = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers += [*_conv_bn(in_channels, expanded, 1), activation()]
        layers += [*_conv_bn(expanded, expanded, kernel, stride=stride, groups=expanded), activation()]
        if excite:
            layers.append(SqueezeExcite(expanded))
        layers += _conv_bn(expanded, out_channels, 1)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV3Large(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(3, 16, 3, stride=2), nn.Hardswish()]
        in_channels = 16
        for kernel, expanded, out_channels, excite, hswish, stride in MOBILENET_V3_LARGE:
            layers.append(InvertedResidual(in_channels, kernel, expanded, out_channels, excite, hswish, stride))
            in_channels = out_channels
        layers += [*_conv_bn(in_channels, 960, 1), nn.Hardswish()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(960, 1280),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(1280, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TinyCNN(nn.Module):
    """For --quick runs and the smoke test: a real conv net, small enough to run in seconds."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(3, 16, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            *_conv_bn(16, 32, 3),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(out_channels)]


def _divisible_by_8(channels: int) -> int:
    return max(8, (channels + 4) // 8 * 8)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "resnet50": ResNet50,
    "mobilenet_v3": MobileNetV3Large,
    "tiny_cnn": TinyCNN,
}


def build(architecture: str, classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The torch model in eval mode with seeded random weights (He initialisation, as torchvision's) and BatchNorm
    statistics calibrated on random images, so activations keep a trained network's scale instead of collapsing
    towards zero (which would make the scores ignore the input and the CPU slow down on denormals)."""
    torch.manual_seed(SEED)
    module = ARCHITECTURES[architecture](classes)
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d):
            layer.momentum = None  # a plain average over the calibration batch
    module.train()
    with torch.no_grad():
        module(torch.randn(CALIBRATION_IMAGES, *input_shape))
    return module.eval()
