"""Post-activation ResNets with basic blocks (He et al. 2016): the CIFAR family
``resnet20/32/56/110`` (depth 6n+2, three stages of width w, 2w, 4w, w = 16) and
the ImageNet ``resnet18`` (four stages of 2 blocks, width 64, 128, 256, 512).

Both are one class, :class:`ResNet`: they differ only in stage widths, blocks
per stage and stem.  Where a block changes shape, its shortcut is a 1x1 conv +
BN projection (He et al.'s option B), not option A's zero-padded identity:
this adds 2,752 parameters to a CIFAR ResNet (ResNet-20: 269,722 -> 272,474).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import FeatureNet, init_weights, pool_flatten
from .registry import Option, register_model
from .stems import STEMS, make_stem

__all__ = ["BasicBlock", "ResNet", "cifar_stages", "residual_stage", "resnet18_stages"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def residual_stage(in_channels: int, out_channels: int, n: int, stride: int) -> list[BasicBlock]:
    """``n`` blocks of ``out_channels``; only the first one strides (and projects
    its shortcut when the shape changes)."""
    return [BasicBlock(in_channels if j == 0 else out_channels, out_channels,
                       stride if j == 0 else 1) for j in range(n)]


class ResNet(FeatureNet):
    """stem -> stages (the first block of every stage but the first has stride
    2) -> global average pool -> linear.  ``forward_features`` returns the last
    block's output (post-ReLU)."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], num_classes: int,
                 in_channels: int = 3, stem: str = "cifar"):
        super().__init__()
        self.stem = make_stem(stem, in_channels, widths[0], norm_act=True)
        stages, prev = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stages += residual_stage(prev, width, n, 1 if i == 0 else 2)
            prev = width
        self.blocks = nn.Sequential(*stages)
        self.num_features = prev
        self.fc = nn.Linear(prev, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(pool_flatten(features))


# ---- CIFAR family: resnet{6n+2} -------------------------------------------------

CIFAR_STEMS = ("cifar", "tiny", "large")  # "imagenet" would waste a 32 px image
CIFAR_RESNET_OPTIONS = {
    "width": Option(16, "channels of the first stage; stages w, 2w, 4w", minimum=1),
    "stem": Option("cifar", "input stem, see ktgfast.models.stems", choices=CIFAR_STEMS),
}


def cifar_stages(depth: int, width: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(widths, blocks per stage) of the CIFAR ResNet of ``depth`` = 6n+2."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    n = (depth - 2) // 6
    return (width, 2 * width, 4 * width), (n, n, n)


def cifar_resnet(num_classes: int, in_channels: int = 3, *, depth: int, width: int = 16,
                 stem: str = "cifar") -> ResNet:
    return ResNet(*cifar_stages(depth, width), num_classes, in_channels, stem)


for _depth in (20, 32, 56, 110):
    register_model(f"resnet{_depth}", options=CIFAR_RESNET_OPTIONS, depth=_depth)(cifar_resnet)


# ---- ImageNet family ------------------------------------------------------------

RESNET18_OPTIONS = {
    "width": Option(64, "channels of the first stage; stages w, 2w, 4w, 8w", minimum=1),
    "stem": Option("imagenet", "input stem, see ktgfast.models.stems", choices=tuple(STEMS)),
}


def resnet18_stages(width: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(widths, blocks per stage) of ResNet-18."""
    return (width, 2 * width, 4 * width, 8 * width), (2, 2, 2, 2)


@register_model("resnet18", options=RESNET18_OPTIONS)
def resnet18(num_classes: int, in_channels: int = 3, *, width: int = 64,
             stem: str = "imagenet") -> ResNet:
    return ResNet(*resnet18_stages(width), num_classes, in_channels, stem)
