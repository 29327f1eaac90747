"""Synthetic, learnable data for tests and smoke runs: each class has a fixed
random prototype image; a sample is its class prototype plus Gaussian noise.
Everything follows from ``seed``, so the same call gives the same data."""
from __future__ import annotations

import torch

from .dataset import Dataset, register_dataset
from .split import Split


def _samples(protos: torch.Tensor, n: int, noise: float, gen: torch.Generator) -> tuple:
    k = protos.shape[0]
    labels = torch.arange(n) % k  # balanced classes
    labels = labels[torch.randperm(n, generator=gen)]
    x = protos[labels] + noise * torch.randn((n, *protos.shape[1:]), generator=gen)
    return x.round_().clamp_(0, 255).to(torch.uint8), labels


@register_dataset("synthetic")
def _synthetic(root, download, seed, *, n_train: int = 512, n_test: int = 128,
               num_classes: int = 10, channels: int = 3, image_size: int = 32,
               noise: float = 48.0) -> Dataset:
    """Prototypes are uniform in [32, 224] per pixel; ``noise`` is the pixel
    standard deviation in uint8 units (mean/std below are those of the default
    settings).  ``root``/``download`` are ignored."""
    if min(n_train, n_test, num_classes, channels, image_size) < 1:
        raise ValueError("synthetic: sizes and counts must be positive")
    gen = torch.Generator().manual_seed(seed)
    protos = 32 + 192 * torch.rand((num_classes, channels, image_size, image_size), generator=gen)
    x_tr, y_tr = _samples(protos, n_train, noise, gen)
    x_te, y_te = _samples(protos, n_test, noise, gen)
    train = Split(x_tr, y_tr, ids=torch.arange(n_train))
    test = Split(x_te, y_te, ids=torch.arange(n_train, n_train + n_test))
    return Dataset(name="synthetic", num_classes=num_classes, channels=channels,
                   image_size=image_size, mean=(0.5,) * channels, std=(0.29,) * channels,
                   train=train, val=None, test=test,
                   classes=tuple(f"class_{i}" for i in range(num_classes)))
