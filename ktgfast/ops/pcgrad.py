"""``pcgrad``: gradient surgery (Yu et al. 2020) for K losses sharing parameters.

The compiled op's fake kernel is registered from this module (schema in
``csrc/pcgrad_schema.cpp``, kernels in ``csrc/cpu/pcgrad.cpp`` and
``csrc/cuda/pcgrad.cu``).  ``pcgrad_order`` builds the per-task visiting order
on the host, so the op itself never synchronises.  The op has no autograd
formula: its result is a gradient, not something to differentiate.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from ._extension import _C, require_extension as _require_extension

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


def _as_parts(grads) -> tuple[list[torch.Tensor], bool]:
    """The gradients as a list of ``(K, *shape)`` tensors, checked; and whether
    the input was a list."""
    if isinstance(grads, torch.Tensor):
        if grads.dim() != 2:
            raise ValueError(f"pcgrad: a tensor of gradients must be (K, P), got shape {tuple(grads.shape)}")
        return [grads], False
    parts = list(grads)
    if not parts:
        raise ValueError("pcgrad: grads is an empty list; give a (K, P) tensor or tensors (K, *shape)")
    first = parts[0]
    for t, g in enumerate(parts):
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"pcgrad: grads[{t}] is a {type(g).__name__}, not a tensor")
        if g.dim() < 1:
            raise ValueError(f"pcgrad: grads[{t}] must be (K, *shape), got a 0-dim tensor")
        if g.shape[0] != first.shape[0]:
            raise ValueError(f"pcgrad: all grads need the same K = grads[0].shape[0] = {first.shape[0]}, "
                             f"grads[{t}] has shape {tuple(g.shape)}")
        if g.dtype != first.dtype:
            raise ValueError(f"pcgrad: all grads need one dtype; grads[0] is {first.dtype}, grads[{t}] is {g.dtype}")
        if g.device != first.device:
            raise ValueError(f"pcgrad: all grads need one device; grads[0] is on {first.device}, "
                             f"grads[{t}] on {g.device}")
    return parts, True


def _check_order(order: torch.Tensor, k: int) -> None:
    """Row ``i`` of ``order`` must be a permutation of the tasks other than ``i``."""
    if not isinstance(order, torch.Tensor):
        raise TypeError(f"pcgrad: order must be 'random', 'fixed' or a (K, K-1) int64 tensor, got {order!r}")
    if order.dtype != torch.long or tuple(order.shape) != (k, k - 1):
        raise ValueError(f"pcgrad: an order tensor must be int64 (K, K-1) = ({k}, {k - 1}), "
                         f"got {order.dtype} {tuple(order.shape)}")
    rows = order.tolist()  # one copy (and, for a device tensor, one sync): K is small
    for i, row in enumerate(rows):
        if sorted(row) != [j for j in range(k) if j != i]:
            raise ValueError(f"pcgrad: order row {i} must be a permutation of the other tasks "
                             f"{[j for j in range(k) if j != i]}, got {row}")


def pcgrad(
    grads: torch.Tensor | Sequence[torch.Tensor],
    order: str | torch.Tensor = "random",
    generator: torch.Generator | int | None = None,
    reduction: str = "sum",
) -> PCGradResult:
    """PCGrad (Yu et al. 2020, Alg. 1) of K gradients that share parameters.

    For every task ``i``, ``g_i' = g_i``; for every other task ``j`` in
    ``order[i]``, if ``g_i' . g_j < 0`` (against the *original* ``g_j``),
    ``g_i' -= (g_i' . g_j) / ||g_j||^2 g_j``.  The update is the sum (or mean)
    of the ``g_i'``.  Computed as Gram matrix -> K x K coefficient recurrence ->
    one weighted sum (exact in exact arithmetic; dot products in float64): two
    passes over the data, no host synchronisation in the op.

    Args:
        grads: a ``(K, P)`` tensor, or a list of ``(K, *shape)`` tensors (one
            per parameter; same K, dtype and device).  float32 / float64 /
            float16 / bfloat16, any strides.  Inputs are detached: the result
            is not differentiable.
        order: ``"random"`` (a fresh permutation per task from ``generator``,
            as in the paper), ``"fixed"`` (increasing index) or a ``(K, K-1)``
            int64 tensor whose row ``i`` is a permutation of the other tasks
            (validated on the host: pass a CPU tensor to avoid a device sync).
        generator: for ``"random"``: a CPU ``torch.Generator`` or an int seed
            (``None``: a fresh seed).  Ignored for the other orders.
        reduction: ``"sum"`` (the paper) or ``"mean"``.

    Returns:
        ``PCGradResult(update, conflicts)``: ``update`` ``(P,)`` for a tensor
        input, a list of ``(*shape)`` tensors for a list input (input dtype);
        ``conflicts`` ``(K, K)`` int64, 1 where the original ``g_i . g_j < 0``.
    """
    _require_extension()
    parts, as_list = _as_parts(grads)
    k = parts[0].shape[0]
    if reduction not in PCGRAD_REDUCTIONS:
        raise ValueError(f"unknown pcgrad reduction {reduction!r}; allowed: {', '.join(PCGRAD_REDUCTIONS)}")
    if isinstance(order, str):
        order = pcgrad_order(k, order, generator)
    else:
        _check_order(order, k)
    order = order.to(parts[0].device, non_blocking=True)
    updates, conflicts = torch.ops.ktgfast.pcgrad(
        [g.detach() for g in parts], order, PCGRAD_REDUCTIONS[reduction]
    )
    return PCGradResult(list(updates) if as_list else updates[0], conflicts)


def _fake(grads, order, reduction):
    k = grads[0].shape[0]
    return [g.new_empty(g.shape[1:]) for g in grads], grads[0].new_empty((k, k), dtype=torch.long)


if _C is not None:
    torch.library.register_fake("ktgfast::pcgrad")(_fake)
