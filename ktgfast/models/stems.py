"""Input stems: the first convolution (and pooling) sized to the images.

The thesis (§3.3.1, "Models"; docs/methods.md#recipes) adapts networks to image size only in
the stem.  ``STEMS`` holds the numbers::

    stem        first conv             max-pool               downsampling
    imagenet    7x7, stride 2, pad 3   3x3, stride 2, pad 1   4  (He et al. 2016)
    cifar       3x3, stride 1, pad 1   none                   1  (32 px images)
    tiny        3x3, stride 1, pad 1   none                   1  (see below)
    large       7x7, stride 1, pad 3   7x7, stride 7, pad 0   7  (thesis, "larger
                                                                  images": 224 -> 32)

``tiny`` (Tiny-ImageNet, 64 px): the thesis only says "first conv with stride
1".  We take the common Tiny-ImageNet reading, a 3x3 stride-1 conv without
max-pool, which makes it the same layers as ``cifar``; it is a separate name so
that configs say which dataset they mean.  For the CIFAR networks (whose first
conv already has stride 1) the thesis's instruction is a no-op, so there too
``tiny`` equals ``cifar``.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["STEMS", "Stem", "make_stem"]


@dataclass(frozen=True)
class Stem:
    kernel: int
    stride: int
    padding: int
    pool: tuple[int, int, int] | None  # max-pool (kernel, stride, padding)

    @property
    def downsampling(self) -> int:
        return self.stride * (self.pool[1] if self.pool else 1)


STEMS: dict[str, Stem] = {
    "imagenet": Stem(7, 2, 3, (3, 2, 1)),
    "cifar": Stem(3, 1, 1, None),
    "tiny": Stem(3, 1, 1, None),
    "large": Stem(7, 1, 3, (7, 7, 0)),
}


def make_stem(kind: str, in_channels: int, out_channels: int, *, norm_act: bool) -> nn.Sequential:
    """conv [-> BN -> ReLU] [-> max-pool].  ``norm_act=False`` for pre-activation
    networks, whose first block normalises its own input."""
    s = STEMS[kind]
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, s.kernel, s.stride, s.padding, bias=False)
    ]
    if norm_act:
        layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    if s.pool is not None:
        layers.append(nn.MaxPool2d(*s.pool))
    return nn.Sequential(*layers)
