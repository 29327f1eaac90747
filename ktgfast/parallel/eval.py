"""Exact sharded evaluation: rank ``r`` of ``W`` evaluates the ``r``-th of
``W`` contiguous chunks of a split (``tensor_split``: sizes differ by at most
one, nothing padded, so no sample is counted twice at the tail), and the hit
counts are summed over ranks."""
from __future__ import annotations

import torch
import torch.distributed as dist


def eval_shard(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s chunk of ``n`` samples."""
    sizes = [len(c) for c in torch.arange(n).tensor_split(world_size)]
    start = sum(sizes[:rank])
    return start, start + sizes[rank]


def all_reduce_sum(t: torch.Tensor, world_size: int) -> torch.Tensor:
    """``t`` summed over ranks (in place); a no-op in one process."""
    if world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


__all__ = ["all_reduce_sum", "eval_shard"]
