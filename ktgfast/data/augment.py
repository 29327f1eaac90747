"""Batched pad + random crop + horizontal flip on uint8 image tensors.

The whole batch is one gather: for every output pixel we compute the source
pixel it comes from (crop offset, flip and border rule folded into one index
map), so the cost is independent of the batch's randomness and there is no
per-sample Python loop.  Order matches torchvision's ``RandomCrop(pad) ->
RandomHorizontalFlip``: ``out[i, j] = padded[i + dy, (W-1-j if flip else j) + dx]``
with offsets ``dy, dx`` uniform in ``[0, 2*pad]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch


def _reflect(i: torch.Tensor, n: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    # mirror without repeating the edge pixel (torch's "reflect"): -1 -> 1, n -> n-2
    return (n - 1) - ((n - 1) - i.abs()).abs(), None


def _zero(i: torch.Tensor, n: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    return i.clamp(0, n - 1), (i >= 0) & (i < n)


# pad mode -> (index, n) -> (in-range source index, validity mask or None)
BORDERS: dict[str, Callable] = {"reflect": _reflect, "zero": _zero}


@dataclass(frozen=True)
class Augment:
    """Training augmentation of the thesis, §3.3.1 (CIFAR: pad 4, random crop,
    flip; docs/methods.md#recipes): pad ``pad`` px (``reflect`` | ``zero``),
    random crop back to the input size, horizontal flip with p = 0.5."""

    pad: int = 4
    pad_mode: str = "reflect"
    flip: bool = True
    crop: bool = True

    def __post_init__(self) -> None:
        if self.pad_mode not in BORDERS:
            raise ValueError(f"pad_mode must be one of {sorted(BORDERS)}, got {self.pad_mode!r}")
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {self.pad}")

    @property
    def active(self) -> bool:
        return self.flip or (self.crop and self.pad > 0)

    def sample(self, n: int, generator: torch.Generator) -> "AugParams":
        """Random parameters for ``n`` samples (on the generator's device)."""
        dev = generator.device
        shift = 2 * self.pad + 1 if self.crop else 1
        dy = torch.randint(0, shift, (n,), generator=generator, device=dev)
        dx = torch.randint(0, shift, (n,), generator=generator, device=dev)
        flip = torch.rand(n, generator=generator, device=dev) < 0.5
        if not self.crop:
            dy, dx = dy + self.pad, dx + self.pad  # offset pad == no shift
        if not self.flip:
            flip = torch.zeros_like(flip)
        return AugParams(dy, dx, flip)


@dataclass(frozen=True)
class AugParams:
    dy: torch.Tensor    # (B,) int64, row offset into the padded image
    dx: torch.Tensor    # (B,) int64, column offset into the padded image
    flip: torch.Tensor  # (B,) bool

    def to(self, device) -> "AugParams":
        return AugParams(*(t.to(device, non_blocking=True) for t in (self.dy, self.dx, self.flip)))

    def take(self, sl: slice) -> "AugParams":
        return AugParams(self.dy[sl], self.dx[sl], self.flip[sl])


def augment_batch(x: torch.Tensor, p: AugParams, pad: int, pad_mode: str = "reflect") -> torch.Tensor:
    """Crop/flip a uint8 ``(B, C, H, W)`` batch by ``p``; returns a new tensor."""
    B, C, H, W = x.shape
    if pad_mode == "reflect" and pad >= min(H, W):
        raise ValueError(f"reflect padding {pad} needs images larger than {pad} px, got {H}x{W}")
    border = BORDERS[pad_mode]
    rows = torch.arange(H, device=x.device)
    cols = torch.arange(W, device=x.device)
    r = rows + (p.dy - pad)[:, None]                                          # (B, H)
    c = torch.where(p.flip[:, None], (W - 1) - cols, cols) + (p.dx - pad)[:, None]  # (B, W)
    r, r_ok = border(r, H)
    c, c_ok = border(c, W)
    src = (r[:, :, None] * W + c[:, None, :]).view(B, 1, H * W).expand(B, C, H * W)
    out = x.reshape(B, C, H * W).gather(2, src).view(B, C, H, W)
    if r_ok is not None:
        out.mul_((r_ok[:, :, None] & c_ok[:, None, :])[:, None])  # zero padding
    return out
