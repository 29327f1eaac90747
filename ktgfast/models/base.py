"""What every ktgfast model is: a feature extractor and a head (timm's split).

``forward_features(x)`` returns the feature map ``(N, num_features, H', W')``
that attention-map edges read (thesis §4: ``Q = Σ_c |A_c|^2`` of the last
residual block's output); ``forward_head(features)`` turns it into logits.
Keeping the two apart lets a trainer get logits and the map from one pass.

``forward_outputs(x)`` is that one pass: :class:`ModelOutputs` with the logits,
the attention map a node shows to attention edges, and the logits of an
auxiliary head that has its own loss (ABN's attention branch), if any.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

__all__ = ["FeatureNet", "ModelOutputs", "attention_transfer_map", "init_weights",
           "pool_flatten"]


class ModelOutputs(NamedTuple):
    """Everything one forward pass of a node yields.

    ``logits`` ``(N, C)``; ``attention`` ``(N, H, W)`` float32, the map that
    attention edges compare; ``aux_logits`` ``(N, C)`` of a head trained with its
    own cross-entropy (ABN's attention branch), else ``None``."""

    logits: torch.Tensor
    attention: torch.Tensor
    aux_logits: Optional[torch.Tensor] = None


def attention_transfer_map(features: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Attention Transfer map (Zagoruyko & Komodakis 2017): ``Q = Σ_c |A_c|^p``,
    ``(N, C, H, W) -> (N, H, W)``.

    Always computed in float32 (float64 stays float64): in bf16 the squares of
    activations lose most of their bits, in fp16 they overflow above 256.
    Unnormalised; the attention losses normalise their crops."""
    if features.dim() != 4:
        raise ValueError(f"features must be (N, C, H, W), got shape {tuple(features.shape)}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
        raise ValueError(f"p must be a number > 0, got {p!r}")
    # Autocast never lowers square/pow/sum, so float32 inputs keep them float32.
    a = features if features.dtype == torch.float64 else features.float()
    q = a.square() if p == 2 else a.abs().pow(p)
    return q.sum(dim=1)


class FeatureNet(nn.Module):
    """Base class: subclasses set ``num_features`` and implement the two halves."""

    num_features: int
    # Attention-crop sizes the thesis uses for this family's maps (ResNets:
    # {3, 5, 7}; ABN, whose map is twice as large: {3, 7, 11}).
    crop_sizes: tuple[int, ...] = (3, 5, 7)
    has_aux_logits: bool = False  # forward_outputs yields aux_logits (ABN)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_outputs(self, x: torch.Tensor) -> ModelOutputs:
        """Logits and the Attention Transfer map of ``forward_features`` (the last
        residual block's output, thesis §4), from one pass; no auxiliary head."""
        features = self.forward_features(x)
        return ModelOutputs(self.forward_head(features), attention_transfer_map(features), None)


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
