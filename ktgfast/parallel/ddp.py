"""DDP for the forwards of learning nodes, and the few other collectives
data-parallel training needs (docs/distributed.md).

A step calls a node either as ``model(x)`` or as ``model.forward_outputs(x)``
(logits, attention map, attention-branch logits).  DDP only hooks
``forward``, so the second is wrapped in :class:`OutputsForward` first: the
gradient all-reduce then fires for whichever call the step makes.  The
parameters are the model's own, so optimizers, checkpoints and evaluation keep
using the bare model.

Beside DDP: :func:`broadcast_` (rank 0's tensors to every rank, e.g. the
initial weights of a model that is not a DDP module), :func:`sync_buffers`
(every rank takes rank 0's BatchNorm statistics at a period's end, so that
evaluation, the checkpoint and a resume see one model), :func:`all_reduce_mean_`
(per-task gradients of PCGrad) and :func:`all_gather_rows` (the rows of a
per-sample bank each rank wrote).  Each packs its tensors into one flat
buffer per dtype: one collective, whatever the number of tensors.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class OutputsForward(nn.Module):
    """``forward(x) = model.forward_outputs(x)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_outputs(x)


def ddp_forward(model: nn.Module, outputs: bool, device: torch.device, sync_bn: bool = False):
    """The DDP-wrapped forward of a learning node.  DDP broadcasts rank 0's
    parameters and buffers at construction, so every rank starts from the
    same weights; BatchNorm statistics are rank 0's (broadcast every forward)
    unless ``sync_bn`` converts the model's BatchNorm to SyncBatchNorm."""
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    module = OutputsForward(model) if outputs else model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def _groups(tensors: Sequence[torch.Tensor]) -> dict:
    """Indices of ``tensors`` by (dtype, device): one flat buffer each."""
    out: dict = {}
    for i, t in enumerate(tensors):
        out.setdefault((t.dtype, t.device), []).append(i)
    return out


def _flat(tensors: Sequence[torch.Tensor], idx: list[int]) -> torch.Tensor:
    return torch.cat([tensors[i].detach().reshape(-1) for i in idx])


def _unflat_(tensors: Sequence[torch.Tensor], idx: list[int], flat: torch.Tensor) -> None:
    views = flat.split([tensors[i].numel() for i in idx])
    with torch.no_grad():
        for i, v in zip(idx, views):
            tensors[i].copy_(v.view_as(tensors[i]))


def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Every rank's ``tensors`` become rank ``src``'s (in place)."""
    tensors = list(tensors)
    for idx in _groups(tensors).values():
        flat = _flat(tensors, idx)
        dist.broadcast(flat, src)
        _unflat_(tensors, idx, flat)


def module_tensors(model: nn.Module, parameters: bool = True) -> list[torch.Tensor]:
    """A model's buffers (and parameters): what makes two ranks' copies equal."""
    return ([p for p in model.parameters()] if parameters else []) + list(model.buffers())


def sync_buffers(models: Iterable[nn.Module]) -> None:
    """Every rank takes rank 0's buffers (BatchNorm running statistics and
    counters) of every model.  Parameters are equal already (DDP averages the
    gradients); buffers are not: a train-mode forward updates them with the
    rank's own batch."""
    broadcast_([b for m in models for b in m.buffers()])


def all_reduce_mean_(tensors: Sequence[torch.Tensor], world_size: int) -> None:
    """``tensors`` replaced by their mean over ranks (in place)."""
    tensors = list(tensors)
    for idx in _groups(tensors).values():
        flat = _flat(tensors, idx)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        _unflat_(tensors, idx, flat.div_(world_size))


def all_gather_rows(ids: torch.Tensor, rows: torch.Tensor, world_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(ids, rows)`` of every rank, concatenated in rank order.  Every
    rank must give the same number of ids (the training loaders' ``drop_last``
    shards are equal)."""
    got_ids = [torch.empty_like(ids) for _ in range(world_size)]
    got_rows = [torch.empty_like(rows) for _ in range(world_size)]
    dist.all_gather(got_ids, ids.contiguous())
    dist.all_gather(got_rows, rows.contiguous())
    return torch.cat(got_ids), torch.cat(got_rows)


__all__ = ["OutputsForward", "all_gather_rows", "all_reduce_mean_", "broadcast_", "ddp_forward",
           "module_tensors", "sync_buffers"]
