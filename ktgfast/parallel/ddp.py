"""DDP for the forwards of learning nodes.

A step calls a node either as ``model(x)`` or as ``model.forward_outputs(x)``
(logits, attention map, attention-branch logits).  DDP only hooks
``forward``, so the second is wrapped in :class:`OutputsForward` first: the
gradient all-reduce then fires for whichever call the step makes.  The
parameters are the model's own, so optimizers, checkpoints and evaluation keep
using the bare model."""
from __future__ import annotations

import torch
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


__all__ = ["OutputsForward", "ddp_forward"]
