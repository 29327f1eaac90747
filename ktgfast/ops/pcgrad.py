"""``pcgrad``: gradient surgery (Yu et al. 2020) for K losses sharing parameters.

The compiled op is registered from this module (schema in
``csrc/pcgrad_schema.cpp``).  ``pcgrad_order`` builds the per-task visiting
order on the host, so the op itself never synchronises.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

ORDERS = ("random", "fixed")
PCGRAD_REDUCTIONS = {"sum": 0, "mean": 1}


class PCGradResult(NamedTuple):
    update: torch.Tensor | list  # (P,) or one tensor per parameter: the aggregated gradient
    conflicts: torch.Tensor      # (K, K) int64: 1 where g_i . g_j < 0 (originals), zero diagonal


def pcgrad_order(k: int, mode: str = "random", generator: torch.Generator | int | None = None) -> torch.Tensor:
    """``(K, K-1)`` int64: row ``i`` lists the other tasks in the order task ``i``
    is projected against them.  ``fixed``: increasing index; ``random``: a fresh
    permutation per row from ``generator`` (a ``torch.Generator`` or a seed)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"pcgrad needs K >= 1 gradients, got K={k!r}")
    if mode not in ORDERS:
        raise ValueError(f"unknown pcgrad order {mode!r}; allowed: {', '.join(ORDERS)}")
    others = [[j for j in range(k) if j != i] for i in range(k)]
    if mode == "random":
        if generator is None or isinstance(generator, int):
            seed = generator
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
        others = [[row[p] for p in torch.randperm(k - 1, generator=generator).tolist()] for row in others]
    return torch.tensor(others, dtype=torch.long).reshape(k, k - 1)
