"""What every loader (tensor, torch, DALI) checks and counts the same way."""
from __future__ import annotations

from typing import Sequence

import torch


def check_loader_args(batch_size: int, rank: int, world_size: int, seed: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def check_norm(mean: Sequence[float], std: Sequence[float], channels: int) -> None:
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std need {channels} values (one per channel)")


def shard_size(n: int, rank: int, world_size: int, drop_last: bool) -> int:
    """Samples one rank sees per epoch (before dropping a short batch): with
    drop_last every rank gets n // world_size, so all ranks run equal steps."""
    if drop_last:
        return n // world_size
    return len(torch.arange(n).tensor_split(world_size)[rank])


class EpochMixin:
    """``set_epoch`` as every loader has it (epoch e's randomness depends on e)."""

    epoch: int

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch
