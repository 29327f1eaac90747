"""The diversity metrics of thesis §4.2 as plain functions of logits and maps."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mutual_kl(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Eq. 4.2: the mean over samples of ½(KL(p1‖p2) + KL(p2‖p1)) for logits
    ``(N, C)``, computed from log-probabilities (no underflow for confident
    models)."""
    l1, l2 = F.log_softmax(z1.double(), -1), F.log_softmax(z2.double(), -1)
    kl12 = (l1.exp() * (l1 - l2)).sum(-1)
    kl21 = (l2.exp() * (l2 - l1)).sum(-1)
    return (0.5 * (kl12 + kl21)).mean()


def accuracy(z: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * z.argmax(-1).eq(y).double().mean().item()


def delta_accuracy(z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor) -> float:
    """Eq. 4.4: ACC of the two-model ensemble (mean logits) − ½(ACC_1 + ACC_2),
    in percentage points: how much the pair gains from being averaged."""
    return accuracy((z1 + z2) / 2, y) - 0.5 * (accuracy(z1, y) + accuracy(z2, y))


def normalise_map(q: torch.Tensor) -> torch.Tensor:
    """Each map ``(N, H, W)`` scaled to [0, 1] by its own min and max (as maps
    are shown as heat maps), so maps of different scales compare."""
    flat = q.flatten(1).double()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(q)


def attention_abs_error(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Table 4.6: mean absolute difference of two models' attention maps
    ``(N, H, W)``, each min-max normalised per sample (ours: the thesis does
    not state a normalisation; ABN maps are already in [0, 1])."""
    if q1.shape != q2.shape:
        raise ValueError(f"attention maps differ in shape: {tuple(q1.shape)} vs {tuple(q2.shape)}")
    return (normalise_map(q1) - normalise_map(q2)).abs().mean()
