"""What every ktgfast model is: a feature extractor and a head (timm's split).

``forward_features(x)`` returns the feature map ``(N, num_features, H', W')``
that attention-map edges read (thesis §4: ``Q = Σ_c |A_c|^2`` of the last
residual block's output); ``forward_head(features)`` turns it into logits.
Keeping the two apart lets a trainer get logits and the map from one pass.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureNet", "init_weights", "pool_flatten"]


class FeatureNet(nn.Module):
    """Base class: subclasses set ``num_features`` and implement the two halves."""

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def pool_flatten(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling to (N, C); a mean over H, W keeps any memory format."""
    return x.mean(dim=(2, 3))


def init_weights(model: nn.Module) -> nn.Module:
    """He (Kaiming) normal init of convolutions, ``fan_out`` mode as torchvision's
    ResNets do; BatchNorm weight 1 and bias 0.  Linear layers keep PyTorch's
    default (uniform ±1/sqrt(fan_in)), as in torchvision."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
