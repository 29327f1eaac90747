"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis 2016): pre-activation basic
blocks, a 16-channel stem conv, three groups of ``n = (d - 4) / 6`` blocks with
16k, 32k, 64k channels, then BN-ReLU, global average pool and linear.

Registered as ``wrn28_2``, ``wrn28_6``, ``wrn28_10`` and as the template
``wrn{depth}_{widen}`` for any d = 6n+4 (n >= 1) and k >= 1, e.g. ``wrn16_1``.

``forward_features`` returns the last block's output *before* the final
BN-ReLU (which belongs to the head): that sum is the last residual block's
output, the tensor the original Attention Transfer code reads its maps from.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import FeatureNet, init_weights, pool_flatten
from .registry import Option, register_model
from .stems import make_stem

__all__ = ["PreActBlock", "WideResNet"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3, plus the shortcut.

    When the shape changes the shortcut is a 1x1 conv applied to the
    *pre-activated* input (as in the original WRN code); otherwise it is the
    identity on the raw input, so the residual stream stays un-normalised."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)  # the pre-activation is reused by the shortcut
        self.project = stride != 1 or in_channels != out_channels  # static: compile-safe
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
                         if self.project else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu(self.bn1(x))
        out = self.conv2(self.drop(self.relu(self.bn2(self.conv1(act)))))
        return out + self.shortcut(act if self.project else x)


class WideResNet(FeatureNet):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3,
                 width: int = 16, dropout: float = 0.0, stem: str = "cifar"):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if widen < 1:
            raise ValueError(f"WRN widening factor k must be >= 1, got {widen}")
        n = (depth - 4) // 6
        self.stem = make_stem(stem, in_channels, width, norm_act=False)
        blocks, prev = [], width
        for i, channels in enumerate((width * widen, 2 * width * widen, 4 * width * widen)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(PreActBlock(prev, channels, stride, dropout))
                prev = channels
        self.blocks = nn.Sequential(*blocks)
        self.num_features = prev
        self.norm = nn.BatchNorm2d(prev)
        self.fc = nn.Linear(prev, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        # Not in place: ``features`` may also feed an attention map.
        return self.fc(pool_flatten(torch.relu(self.norm(features))))


WRN_OPTIONS = {
    "dropout": Option(0.0, "dropout between the two convs of every block", minimum=0.0,
                      below=1.0),
    "width": Option(16, "base channels w: stem w, groups wk, 2wk, 4wk", minimum=1),
    "stem": Option("cifar", "input stem, see ktgfast.models.stems",
                   choices=("cifar", "tiny", "large")),
}


def wide_resnet(num_classes: int, in_channels: int = 3, *, depth: int, widen: int,
                dropout: float = 0.0, width: int = 16, stem: str = "cifar") -> WideResNet:
    return WideResNet(depth, widen, num_classes, in_channels, width, dropout, stem)


register_model("wrn{depth}_{widen}", options=WRN_OPTIONS)(wide_resnet)
for _d, _k in ((28, 2), (28, 6), (28, 10)):
    register_model(f"wrn{_d}_{_k}", options=WRN_OPTIONS, depth=_d, widen=_k)(wide_resnet)
