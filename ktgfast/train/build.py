"""Building what a step trains: a node's model, optimizers, epoch schedules,
batch augmentation and autocast, from the run's config and the dataset's
recipe (``ktgfast.data.recipes``)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..data.recipes import recipe
from ..graph import AUTO_MODEL
from .config import TrainConfig
from .lowering import EnsembleNode


def model_name(node, data) -> str:
    """The architecture of ``node`` (``auto`` becomes the dataset's default)."""
    return recipe(data).model if node.model == AUTO_MODEL else node.model


def build_node_model(node, data, device: torch.device, channels_last: bool = False) -> nn.Module:
    from ..models import build_model

    if node.is_ensemble:
        return EnsembleNode()
    model = build_model(model_name(node, data), data.num_classes, in_channels=data.channels,
                        **node.options).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def resolved_lr(config: TrainConfig, data) -> float:
    return config.lr if config.lr is not None else recipe(data).lr


def sgd(model: nn.Module, lr: float, c: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=c.momentum,
                           nesterov=c.nesterov and c.momentum > 0, weight_decay=c.weight_decay)


def resolved_schedule(c: TrainConfig, data=None) -> str:
    """``config.schedule`` with ``auto`` replaced by the dataset recipe's
    (``ktgfast.data.recipes``; cosine where no dataset is given)."""
    if c.schedule != "auto":
        return c.schedule
    return recipe(data).schedule if data is not None else "cosine"


def epoch_scheduler(opt: torch.optim.Optimizer, c: TrainConfig, data):
    """The per-epoch lr schedule of ``config.schedule`` (stepped after each
    epoch; ``auto``: :func:`resolved_schedule`).  Cosine: epoch e (from 0)
    trains at lr (1 + cos(π e / epochs)) / 2."""
    schedule = resolved_schedule(c, data)
    if schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, c.resolved_milestones(), c.gamma)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def make_augment(c: TrainConfig, data):
    """The training batches' augmentation (None for ``augment: none``)."""
    from ..data import Augment

    mode = recipe(data).augment if c.augment == "auto" else c.augment
    if mode == "none":
        return None
    return Augment(pad=c.pad, pad_mode=c.pad_mode, crop=True, flip=mode == "crop_flip")


def make_train_loader(run, rank: int | None = None, world_size: int | None = None):
    """``(name, loader)``: the shuffled, augmented training batches ``(x, y, idx)``
    of ``run.data.train`` (``drop_last``), shard ``rank`` of ``world_size``
    (default: the process's rank of the launch; node parallel passes its data
    replica, so the ranks of one replica see the same batches)."""
    from ..data.loaders import make_loader, resolve_loader

    cfg, data = run.config, run.data
    name, reason = resolve_loader(cfg.loader, data, run.device)
    run._print(reason)
    loader = make_loader(
        name, data.train, cfg.batch_size, device=run.device, dataset=data, shuffle=True,
        drop_last=True, augment=make_augment(cfg, data), mean=data.mean, std=data.std,
        seed=cfg.seed, rank=run.dist.rank if rank is None else rank,
        world_size=run.dist.world_size if world_size is None else world_size)
    if len(loader) == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training split "
                         f"({len(data.train.labels)} samples); no step would run")
    return name, loader


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


__all__ = ["autocast", "build_node_model", "epoch_scheduler", "make_augment", "model_name",
           "make_train_loader", "resolved_lr", "resolved_schedule", "sgd"]
