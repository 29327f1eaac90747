"""The one parameter update every training step ends with."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def update(optimizers: Sequence[torch.optim.Optimizer], scaler: torch.amp.GradScaler,
           loss: torch.Tensor | None = None, *, write_grads: Callable[[], None] | None = None) -> None:
    """``zero_grad``; the gradients -- the (loss-scaled) backward of ``loss``,
    or ``write_grads()`` where a step aggregates its own (PCGrad); every
    optimizer steps; the scaler updates.  Reads nothing back to the host."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    if write_grads is not None:
        write_grads()
    else:
        scaler.scale(loss).backward()
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()


__all__ = ["update"]
