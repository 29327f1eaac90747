"""Tiny models for demos and fast tests (MNIST-sized inputs, CPU seconds).

``cnn_small``: [conv3x3-BN-ReLU-maxpool2] x 2 with 16 and 32 channels; the head
average-pools the map to ``pool x pool`` (adaptive, so any input >= 8 px works)
and applies one linear layer.  A 4x4 grid rather than global pooling keeps
coarse positions: after two 3x3 convs a unit sees only 10x10 px, too little
for global pooling alone to tell digits apart by layout.

``mlp``: flatten -> linear -> ReLU (``hidden`` units) -> linear.  Its "feature
map" is the hidden layer as ``(N, hidden, 1, 1)``, so code written for conv
features runs unchanged.  The input size is fixed at build time
(``image_size``, square).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import FeatureNet, init_weights
from .registry import Option, register_model

__all__ = ["SmallCNN", "MLP"]


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(FeatureNet):
    def __init__(self, num_classes: int, in_channels: int = 3, pool: int = 4):
        super().__init__()
        self.features = nn.Sequential(_conv_block(in_channels, 16), _conv_block(16, 32))
        self.num_features = 32
        self.pool = pool
        self.fc = nn.Linear(32 * pool * pool, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(features, self.pool), 1))


class MLP(FeatureNet):
    def __init__(self, num_classes: int, in_channels: int = 3, hidden: int = 256,
                 image_size: int = 28):
        super().__init__()
        self.hidden = nn.Linear(in_channels * image_size * image_size, hidden)
        self.num_features = hidden
        self.fc = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden(torch.flatten(x, 1)))
        return h[:, :, None, None]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(features, 1))


@register_model("cnn_small", options={
    "pool": Option(4, "side of the adaptive average pool before the linear head; "
                   "1 = global pooling", minimum=1),
})
def cnn_small(num_classes: int, in_channels: int = 3, *, pool: int = 4) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, pool)


@register_model("mlp", options={
    "hidden": Option(256, "units of the hidden layer", minimum=1),
    "image_size": Option(28, "side of the square input images", minimum=1),
})
def mlp(num_classes: int, in_channels: int = 3, *, hidden: int = 256,
        image_size: int = 28) -> MLP:
    return MLP(num_classes, in_channels, hidden, image_size)
