"""EMA nodes (thesis eq. 5.2): ``θ_ema ← α θ_ema + (1 − α) θ_src`` after every
optimizer step, for every (EMA model, source model) pair at once.

One multi-tensor ``torch._foreach_lerp_`` updates every floating parameter
*and* floating buffer of every EMA model (``lerp(a, b, 1 − α) = α a + (1 − α) b``);
one ``torch._foreach_copy_`` copies the integer buffers (BatchNorm's
``num_batches_tracked``).  Buffers are averaged, not copied: an EMA node runs
in eval mode with its running BatchNorm statistics, and the average of the
source's statistics belongs to the averaged weights (as timm's ModelEmaV2
does; FixMatch implementations differ).  EMA models never receive gradient
(their parameters have ``requires_grad=False`` and no optimizer).
"""
from __future__ import annotations

import torch
from torch import nn


class EmaUpdater:
    def __init__(self, pairs: list[tuple[nn.Module, nn.Module]], decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay {decay!r}; allowed: a number in [0, 1)")
        self.decay = float(decay)
        self.pairs = pairs
        self.ema_f: list[torch.Tensor] = []
        self.src_f: list[torch.Tensor] = []
        self.ema_i: list[torch.Tensor] = []
        self.src_i: list[torch.Tensor] = []
        for ema, src in pairs:
            ema.requires_grad_(False)
            a, b = _tensors(ema), _tensors(src)
            if list(a) != list(b):
                raise ValueError("an EMA model must have its source's architecture "
                                 f"(tensor names differ: {sorted(set(a) ^ set(b))[:4]})")
            for name, t in a.items():
                s = b[name]
                if t.shape != s.shape or t.dtype != s.dtype:
                    raise ValueError(f"EMA tensor {name!r}: {tuple(t.shape)} {t.dtype} vs the "
                                     f"source's {tuple(s.shape)} {s.dtype}")
                floating = t.is_floating_point()
                (self.ema_f if floating else self.ema_i).append(t)
                (self.src_f if floating else self.src_i).append(s)

    @torch.no_grad()
    def reset(self) -> None:
        """Start every EMA model at its source's weights (Mean Teacher's init)."""
        if self.ema_f or self.ema_i:
            torch._foreach_copy_(self.ema_f + self.ema_i, self.src_f + self.src_i)

    @torch.no_grad()
    def update(self) -> None:
        if self.ema_f:
            torch._foreach_lerp_(self.ema_f, self.src_f, 1.0 - self.decay)
        if self.ema_i:
            torch._foreach_copy_(self.ema_i, self.src_i)


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name, detached (same storage)."""
    out = {f"p:{k}": v.detach() for k, v in model.named_parameters()}
    out.update({f"b:{k}": v.detach() for k, v in model.named_buffers()})
    return out
