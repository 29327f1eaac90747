"""Attention Branch Networks (Fukui et al., CVPR 2019) on the ResNets of
:mod:`ktgfast.models.resnet`, as the thesis uses them (§4.4.1; docs/methods.md): the map
re-weights the features *without* ABN's residual bypass, ``f × M`` rather than
``f × (1 + M)``.

Three parts::

    x ─ stem ─ feature extractor ─ f ─┬─ f × M ─ perception branch ─ GAP ─ fc ─▶ logits
                                      │      ▲
                                      └─ attention branch ─▶ M, aux_logits

* **Feature extractor**: the stem and every ResNet stage but the last, so ``f``
  has the last-but-one stage's width and twice the final resolution.
* **Attention branch** (reads ``f``): as many residual blocks as the last stage,
  of its width but at stride 1 (the first block projects the channels); BN;
  1x1 conv to C (= num_classes) channels; BN; ReLU.  That ``(N, C, h, w)`` tensor
  is the class-activation map ``K``.  Its logits are ``GAP(1x1 conv C->C (K))``,
  trained with their own cross-entropy as in ABN; the attention map is
  ``M = sigmoid(BN(1x1 conv C->1 (K)))``, in [0, 1].  (The paper's figure has the
  1x1 map conv we use; the public code uses a 3x3 one.  The public code also
  uses bottleneck blocks from CIFAR depth 44 on; we keep the basic blocks of
  :mod:`~ktgfast.models.resnet` at every depth, so ABN and plain nodes match.)
* **Perception branch**: the last stage (stride 2), applied to ``f × M``, then
  global average pooling and the linear classifier: the network's logits.

Where the branch reads and the map size
----------------------------------------
The branch reads the output of the last-but-one stage and the map multiplies
that same tensor, as in the public ABN code (CIFAR: after stage 2 of 3;
ImageNet: after stage 3 of 4).  So the map is *twice* the plain ResNet's final
map (which is the AT map a plain ResNet shows):

=================  ========  =====  ========  ================
model              stem      input  ABN map   plain ResNet map
=================  ========  =====  ========  ================
abn_resnet20/...   cifar     32     16 x 16   8 x 8
                   tiny      64     32 x 32   16 x 16
                   large     224    16 x 16   8 x 8
abn_resnet18       imagenet  224    14 x 14   7 x 7
                   large     224    8 x 8     4 x 4
                   cifar     32     8 x 8     4 x 4
                   tiny      64     16 x 16   8 x 8
=================  ========  =====  ========  ================

That is why the thesis's ABN crop sizes are {3, 7, 11} against {3, 5, 7} for
ResNets (``crop_sizes``): an 11-cell crop needs a map of at least 11 cells, and
on the thesis's settings (CIFAR 32 px, fine-grained 224 px with the ImageNet
stem) the ABN map is 16x16 or 14x14 while a plain ResNet's is 8x8 or 7x7.  With
the ``large`` stem on ResNet-18 the map is 8x8 and larger crops are clipped
(see ``ktgfast.reference.crop_window``).

The FeatureNet contract
-----------------------
``forward(x)`` returns the perception logits, so everything that calls
``model(x)`` (evaluation, pretraining, edges on logits) works unchanged.
``forward_features(x)`` is the perception branch's output (the last residual
block's, as for a plain ResNet: same shape, ``num_features`` channels);
``forward_head`` pools it and applies ``fc``; ``attention_transfer_map`` of it
still gives an AT map comparable with a plain ResNet's.  ``forward_outputs(x)`` returns
the perception logits, the branch's map ``M`` (``(N, h, w)``, float32) and the
branch's logits, from one pass.  The branch's logits are only in
``forward_outputs``: a trainer of an ABN node adds their cross-entropy.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import FeatureNet, ModelOutputs, init_weights, pool_flatten
from .registry import register_model
from .resnet import (CIFAR_RESNET_OPTIONS, RESNET18_OPTIONS, cifar_stages, residual_stage,
                     resnet18_stages)
from .stems import make_stem

__all__ = ["ABNResNet", "AttentionBranch"]


class AttentionBranch(nn.Module):
    """``f -> (M (N, 1, h, w) in (0, 1), logits (N, C))``, see the module doc."""

    def __init__(self, in_channels: int, width: int, blocks: int, num_classes: int):
        super().__init__()
        self.blocks = nn.Sequential(*residual_stage(in_channels, width, blocks, stride=1))
        self.norm = nn.BatchNorm2d(width)
        self.to_classes = nn.Conv2d(width, num_classes, 1, bias=False)
        self.class_norm = nn.BatchNorm2d(num_classes)
        # A classifier: it gets a bias, as the perception branch's fc has one.
        self.classifier = nn.Conv2d(num_classes, num_classes, 1)
        self.to_map = nn.Conv2d(num_classes, 1, 1, bias=False)  # BN follows: no bias
        self.map_norm = nn.BatchNorm2d(1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.norm(self.blocks(features))
        class_map = torch.relu(self.class_norm(self.to_classes(out)))
        logits = pool_flatten(self.classifier(class_map))
        attention = torch.sigmoid(self.map_norm(self.to_map(class_map)))
        return attention, logits


class ABNResNet(FeatureNet):
    """ABN on a post-activation ResNet with stage ``widths`` and ``blocks`` per
    stage (at least two stages); the last stage is the perception branch."""

    crop_sizes = (3, 7, 11)
    # forward_outputs returns the attention branch's logits, which trainers
    # train with their own cross-entropy (ktgfast.train.lowering.Slots).
    has_aux_logits = True

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], num_classes: int,
                 in_channels: int = 3, stem: str = "cifar"):
        super().__init__()
        if len(widths) != len(blocks) or len(widths) < 2:
            raise ValueError(f"ABN needs >= 2 stages with one width each, got widths "
                             f"{widths} and blocks {blocks}")
        self.stem = make_stem(stem, in_channels, widths[0], norm_act=True)
        extractor, prev = [], widths[0]
        for i, (width, n) in enumerate(zip(widths[:-1], blocks[:-1])):
            extractor += residual_stage(prev, width, n, 1 if i == 0 else 2)
            prev = width
        self.extractor = nn.Sequential(*extractor)
        self.attention_branch = AttentionBranch(prev, widths[-1], blocks[-1], num_classes)
        self.perception = nn.Sequential(*residual_stage(prev, widths[-1], blocks[-1], stride=2))
        self.num_features = widths[-1]
        self.fc = nn.Linear(widths[-1], num_classes)
        init_weights(self)

    def _branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(perception features, map (N, 1, h, w), attention-branch logits)."""
        features = self.extractor(self.stem(x))
        attention, aux_logits = self.attention_branch(features)
        # No residual bypass (thesis §4.4.1): features × M, not features × (1 + M).
        return self.perception(features * attention), attention, aux_logits

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._branches(x)[0]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(pool_flatten(features))

    def forward_outputs(self, x: torch.Tensor) -> ModelOutputs:
        features, attention, aux_logits = self._branches(x)
        return ModelOutputs(self.forward_head(features), attention.squeeze(1).float(),
                            aux_logits)


def abn_cifar_resnet(num_classes: int, in_channels: int = 3, *, depth: int, width: int = 16,
                     stem: str = "cifar") -> ABNResNet:
    return ABNResNet(*cifar_stages(depth, width), num_classes, in_channels, stem)


for _depth in (20, 32, 56, 110):
    register_model(f"abn_resnet{_depth}", options=CIFAR_RESNET_OPTIONS,
                   depth=_depth)(abn_cifar_resnet)


@register_model("abn_resnet18", options=RESNET18_OPTIONS)
def abn_resnet18(num_classes: int, in_channels: int = 3, *, width: int = 64,
                 stem: str = "imagenet") -> ABNResNet:
    return ABNResNet(*resnet18_stages(width), num_classes, in_channels, stem)
