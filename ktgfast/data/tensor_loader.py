"""Device-resident loader for in-memory datasets (CIFAR, MNIST, synthetic).

The split's uint8 images are copied to ``device`` once; each batch is an index
gather, the batched augmentation of ``augment.py`` and one fused normalisation,
so no worker processes and no host round trip per batch.

Reproducibility: epoch ``e``'s order comes from a CPU generator seeded by
``(seed, e)`` (the same on every rank, so rank shards are disjoint) and its
augmentation from one seeded by ``(seed, e, rank)``.  Both are drawn at the
start of the epoch and sent to the device in one copy.  Nothing depends on
earlier epochs, so a run resumed at an epoch boundary (``set_epoch``) sees
exactly the batches of an uninterrupted one, on any device.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from .augment import Augment, AugParams, augment_batch
from .split import Split

_ORDER, _AUGMENT = 0, 1  # generator streams


def _generator(*words: int) -> torch.Generator:
    """A CPU generator whose seed mixes ``words`` (SeedSequence: no collisions
    between e.g. (seed 1, epoch 0) and (seed 0, epoch 1))."""
    hi, lo = np.random.SeedSequence(list(words)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(hi) << 31) ^ int(lo))


class TensorLoader:
    """Batches ``(x, y, idx)`` of ``split``: ``x`` float32 normalised
    ``(B, C, H, W)`` on ``device``, ``y`` int64 labels, ``idx`` int64 row
    indices into ``split`` (``split.ids[idx]`` are the stable sample ids).

    ``shuffle``: a new permutation each epoch.  ``drop_last``: drop a last
    short batch, and trim each epoch to ``world_size * (N // world_size)``
    samples so every rank runs the same number of steps (needed by DDP).
    Without it ranks cover every sample exactly once, but shard sizes may
    differ by one (fine for evaluation).  Rank ``r`` sees the ``r``-th of
    ``world_size`` contiguous chunks of the epoch's order.

    Iterating starts the current epoch and then advances it by one, so a loop
    that never calls ``set_epoch`` still gets fresh epochs; a trainer that
    resumes calls ``set_epoch(e)`` and gets epoch ``e`` bit for bit.
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = True, augment: Optional[Augment] = None,
                 mean: Sequence[float], std: Sequence[float], device="cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        C, H, W = split.images.shape[1:]
        if len(mean) != C or len(std) != C:
            raise ValueError(f"mean/std need {C} values (one per channel)")
        if augment is not None and augment.crop and augment.pad_mode == "reflect" \
                and augment.pad >= min(H, W):
            raise ValueError(f"reflect padding {augment.pad} is too large for {H}x{W} images")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment = augment if augment is not None and augment.active else None
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last = channels_last
        # x_norm = (u8 / 255 - mean) / std = u8 * scale + shift
        s = torch.tensor(std, dtype=torch.float64)
        m = torch.tensor(mean, dtype=torch.float64)
        self._scale = (1 / (255 * s)).float().view(1, C, 1, 1).to(self.device)
        self._shift = (-m / s).float().view(1, C, 1, 1).to(self.device)
        self.epoch = 0

    @classmethod
    def eval(cls, split: Split, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
             device="cpu", rank: int = 0, world_size: int = 1,
             channels_last: bool = False) -> "TensorLoader":
        """Evaluation mode: no augmentation, no shuffle, no dropped samples."""
        return cls(split, batch_size, shuffle=False, drop_last=False, augment=None, mean=mean,
                   std=std, device=device, rank=rank, world_size=world_size,
                   channels_last=channels_last)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before dropping a short batch)."""
        n = len(self.labels)
        if self.drop_last:
            return n // self.world_size
        return len(torch.arange(n).tensor_split(self.world_size)[self.rank])

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices of ``epoch`` (CPU int64), in batch order."""
        n = len(self.labels)
        perm = (torch.randperm(n, generator=_generator(self.seed, _ORDER, epoch))
                if self.shuffle else torch.arange(n))
        if self.drop_last:
            perm = perm[: self.world_size * (n // self.world_size)]
        return perm.tensor_split(self.world_size)[self.rank]

    def augment_params(self, epoch: int, n: int) -> Optional[AugParams]:
        if self.augment is None:
            return None
        return self.augment.sample(n, _generator(self.seed, _AUGMENT, epoch, self.rank))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> float32 normalised (channels-last if asked)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # on uint8: 4x less to move
        return torch.addcmul(self._shift, x.float(), self._scale)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order = self.order(epoch)
        params = self.augment_params(epoch, len(order))
        order = order.to(self.device, non_blocking=True)
        if params is not None:
            params = params.to(self.device)
        return self._batches(order, params)

    def _batches(self, order: torch.Tensor, params: Optional[AugParams]):
        b = self.batch_size
        for k in range(len(self)):
            sl = slice(k * b, (k + 1) * b)
            idx = order[sl]
            x = self.images[idx]
            if params is not None:
                x = augment_batch(x, params.take(sl), self.augment.pad, self.augment.pad_mode)
            yield self.normalize(x), self.labels[idx], idx
