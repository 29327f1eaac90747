"""mixup (Zhang et al. 2018) and superclass-aware mixup for graph training (the
superclass-mixup paper, §3-4; docs/methods.md#superclass-aware-mixup).

A mixed batch is ``x̃ = λ·x + (1 − λ)·x[perm]`` with targets
``λ·y + (1 − λ)·y[perm]``, where ``perm`` is a random permutation of the batch
and every node of the graph sees the same ``x̃``.  The targets stay two
integer label vectors and the weights (:class:`MixedTargets`); the trainer
turns them into soft-target cross-entropies (``ktgfast.train.mixup_loss``).

λ is drawn **per sample** (per pair ``(i, perm[i])``) under every policy: the
superclass policies must decide per pair anyway, and one rule for all keeps
the policies comparable.  (Zhang et al. draw one λ per batch; with Beta(1, 1)
per-sample draws only lower the variance of the batch's mixing.)

Policies (``POLICIES``; λ weighs the sample, 1 − λ its partner):

=====================  ==========================================================
``beta``               λ ~ Beta(α, α) (α = ``alpha``, 1.0 by default)
``superclass_beta``    λ ~ Beta(8, 8) if the pair shares a superclass (mixes near
                       the middle), Beta(0.2, 0.2) otherwise (one image dominates)
``superclass_select``  λ = 0.5 if the pair shares a superclass, else 0.9 or 0.1
                       (probability ½ each)
=====================  ==========================================================

A pair of the same class shares its superclass.  Superclass policies ignore
``alpha``.  Normalised images are mixed: normalisation is affine and the
weights sum to 1, so that equals normalising the mixed raw images.

Reproducibility: epoch ``e`` on rank ``r`` draws from a generator seeded by
``(seed, e, r)`` only (``set_epoch``), in batch order, so a run resumed at an
epoch boundary mixes exactly as an uninterrupted one; nothing is drawn from
the global RNGs, so turning mixup on changes no other random stream.  Each
policy draws the same amount per batch whatever the labels are.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Union

import numpy as np
import torch

from .superclass import load_superclass_map

MIXUP_STREAM = 0x6D6978  # "mix": keeps these draws apart from the loaders' streams
SAME_SUPERCLASS_BETA = 8.0
OTHER_SUPERCLASS_BETA = 0.2
SELECT_SAME = 0.5
SELECT_OTHER = (0.9, 0.1)

# draw(rng, n, alpha) -> (λ if the pair shares a superclass, λ if not), float64 (n,)
LambdaDraw = Callable[[np.random.Generator, int, float], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Policy:
    draw: LambdaDraw
    uses_superclasses: bool


def _beta(rng: np.random.Generator, n: int, alpha: float):
    lam = rng.beta(alpha, alpha, n)
    return lam, lam


def _superclass_beta(rng: np.random.Generator, n: int, alpha: float):
    return (rng.beta(SAME_SUPERCLASS_BETA, SAME_SUPERCLASS_BETA, n),
            rng.beta(OTHER_SUPERCLASS_BETA, OTHER_SUPERCLASS_BETA, n))


def _superclass_select(rng: np.random.Generator, n: int, alpha: float):
    other = np.where(rng.random(n) < 0.5, *SELECT_OTHER)
    return np.full(n, SELECT_SAME), other


POLICIES: dict[str, Policy] = {
    "beta": Policy(_beta, uses_superclasses=False),
    "superclass_beta": Policy(_superclass_beta, uses_superclasses=True),
    "superclass_select": Policy(_superclass_select, uses_superclasses=True),
}


class MixedTargets(NamedTuple):
    """The targets of a mixed batch: ``lam·onehot(labels) + (1 − lam)·onehot(partner)``."""

    labels: torch.Tensor   # (B,) int64: y of each sample
    partner: torch.Tensor  # (B,) int64: y of the sample it was mixed with
    lam: torch.Tensor      # (B,) float: the weight of ``labels``

    @property
    def dominant(self) -> torch.Tensor:
        """The label of the larger share (``labels`` at λ = 0.5): what a
        ``correct`` gate and attention edges compare against on a mixed batch."""
        return torch.where(self.lam >= 0.5, self.labels, self.partner)

    def soft(self, num_classes: int) -> torch.Tensor:
        """``(B, num_classes)`` soft targets."""
        lam = self.lam[:, None]
        one = torch.nn.functional.one_hot
        return lam * one(self.labels, num_classes).to(lam) + \
            (1 - lam) * one(self.partner, num_classes).to(lam)


def mix(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor,
        lam: torch.Tensor) -> tuple[torch.Tensor, MixedTargets]:
    """Mix sample ``i`` with sample ``perm[i]`` at weight ``lam[i]`` (images
    ``(B, ...)`` and labels ``(B,)``)."""
    w = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return w * x + (1 - w) * x[perm], MixedTargets(y, y[perm], lam.to(x.dtype))


def resolve_superclass_map(dataset, path: Optional[Union[str, os.PathLike]],
                           policy: str) -> torch.Tensor:
    """The fine -> superclass table a superclass policy uses: the JSON map at
    ``path`` if given, else the dataset's own (CIFAR-100's coarse labels; the
    digit shapes of ``DIGIT_SUPERCLASSES`` for mnist5k)."""
    if path is not None:
        return load_superclass_map(path, dataset.num_classes, dataset.classes)
    if dataset.superclass_map is None:
        raise ValueError(f"mixup {policy!r} needs superclasses, but dataset {dataset.name!r} has "
                         f"none: give a JSON map fine class -> superclass with --superclass-map "
                         f"(config.superclass_map)")
    return dataset.superclass_map


class Mixup:
    """Mixes training batches: ``x̃, targets = mixup(x, y)`` after
    ``mixup.set_epoch(e)`` at the start of every epoch.

    ``superclass_map``: int64 ``(num_classes,)`` fine -> superclass table,
    required by the superclass policies (see :func:`resolve_superclass_map`).
    """

    def __init__(self, policy: str, *, alpha: float = 1.0,
                 superclass_map: Optional[torch.Tensor] = None, seed: int = 0, rank: int = 0,
                 device: Union[str, torch.device] = "cpu"):
        if policy not in POLICIES:
            raise ValueError(f"unknown mixup policy {policy!r}; allowed: {', '.join(POLICIES)}")
        if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"mixup alpha = {alpha!r}; it must be a finite number > 0")
        self.name, self.policy, self.alpha = policy, POLICIES[policy], float(alpha)
        if self.policy.uses_superclasses and superclass_map is None:
            raise ValueError(f"mixup {policy!r} needs a superclass map")
        self.device = torch.device(device)
        # beta ignores superclasses: no map, so no superclass test per batch
        self.superclass_map = (superclass_map.to(self.device) if self.policy.uses_superclasses
                               else None)
        self.seed, self.rank = seed, rank
        self.rng: Optional[np.random.Generator] = None

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, MIXUP_STREAM, epoch, self.rank])

    def draw(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(perm, lam)`` for a batch with labels ``y``: one small host draw
        and one copy to the device; the superclass test runs on the device."""
        if self.rng is None:
            raise RuntimeError("call Mixup.set_epoch(epoch) before mixing the epoch's batches")
        n = len(y)
        perm = self.rng.permutation(n)
        same, other = self.policy.draw(self.rng, n, self.alpha)
        host = torch.from_numpy(np.stack([perm.astype(np.float64), same, other]))
        perm_t, same_t, other_t = host.to(self.device, non_blocking=True)
        perm_t = perm_t.long()
        if self.superclass_map is None:
            return perm_t, other_t
        sup = self.superclass_map[y]
        return perm_t, torch.where(sup == sup[perm_t], same_t, other_t)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, MixedTargets]:
        perm, lam = self.draw(y)
        return mix(x, y, perm, lam)

    def __repr__(self) -> str:
        extra = f", alpha={self.alpha}" if not self.policy.uses_superclasses else ""
        return f"Mixup({self.name!r}{extra})"


__all__ = ["MIXUP_STREAM", "MixedTargets", "Mixup", "POLICIES", "Policy", "mix",
           "resolve_superclass_map"]
