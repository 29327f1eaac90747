"""Device-resident loader for in-memory datasets (CIFAR, MNIST, synthetic).

The split's uint8 images are copied to ``device`` once; each batch is an index
gather, the batched augmentation of ``augment.py`` and one normalisation,
so no worker processes and no host round trip per batch.

Two views (``strong=RandAugment(...)``): every batch is
``(x_weak, x_strong, y, idx)``; both views are the same samples with
independent crops/flips, and the strong one adds the batched RandAugment of
``randaugment.py`` (thesis table 5.1: weak ζ2 = flip + crop, strong ζ1 = flip + crop +
RandAugment).

Reproducibility: epoch ``e``'s order comes from a CPU generator seeded by
``(seed, e)`` (the same on every rank, so rank shards are disjoint) and its
augmentation from one seeded by ``(seed, e, rank)`` (the strong view from a
third stream, so enabling it leaves the weak view unchanged).  Crop/flip
parameters are drawn at the start of the epoch and sent to the device in one
copy; RandAugment's stay on the host (they decide how a batch is grouped by
op) and reach the device in one small copy per batch.  Nothing depends on
earlier epochs, so a run resumed at an epoch boundary (``set_epoch``) sees
exactly the batches of an uninterrupted one, on any device.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .augment import Augment, AugParams, augment_batch
from .randaugment import RandAugment, RandAugmentParams
from .loader_common import EpochMixin, check_loader_args, check_norm, shard_size
from .split import Split

_ORDER, _AUGMENT, _STRONG = 0, 1, 2  # generator streams

# batch_transform(x, y, idx) -> (x, y_target): see TensorLoader
BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                          tuple[torch.Tensor, torch.Tensor]]


def _generator(*words: int) -> torch.Generator:
    """A CPU generator whose seed mixes ``words`` (SeedSequence: no collisions
    between e.g. (seed 1, epoch 0) and (seed 0, epoch 1))."""
    hi, lo = np.random.SeedSequence(list(words)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(hi) << 31) ^ int(lo))


def shard_order(n: int, epoch: int, *, seed: int, shuffle: bool, drop_last: bool, rank: int,
                world_size: int) -> torch.Tensor:
    """Rank ``rank``'s sample indices of ``epoch`` (CPU int64), in batch order:
    the ``rank``-th of ``world_size`` contiguous chunks of the epoch's
    permutation (seeded by ``(seed, epoch)``, the same on every rank), trimmed
    to ``world_size * (n // world_size)`` samples when ``drop_last``.  Every
    loader of this package uses it, so they visit the same samples in the
    same order."""
    perm = (torch.randperm(n, generator=_generator(seed, _ORDER, epoch))
            if shuffle else torch.arange(n))
    if drop_last:
        perm = perm[: world_size * (n // world_size)]
    return perm.tensor_split(world_size)[rank]


class TensorLoader(EpochMixin):
    """Batches ``(x, y, idx)`` of ``split``: ``x`` float32 normalised
    ``(B, C, H, W)`` on ``device``, ``y`` int64 labels, ``idx`` int64 row
    indices into ``split`` (``split.ids[idx]`` are the stable sample ids).

    ``strong``: a ``RandAugment`` spec turns on two views; batches are then
    ``(x_weak, x_strong, y, idx)``.  The weak view is ``augment`` (crop/flip)
    as without ``strong``; the strong view is an independent draw of
    ``augment`` followed by RandAugment (with ``augment=None``: the plain
    image, and RandAugment of it).

    ``batch_transform``: an optional hook ``fn(x, y, idx) -> (x, y_target)``
    called on every batch after normalisation, whose results replace ``x``
    and ``y`` in the yielded tuple (``y_target`` may be e.g. soft labels).
    A later issue plugs superclass mixup in here; it needs its own seeded
    generator for reproducibility.  Not supported together with ``strong``
    yet (which views to mix is that issue's decision).

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
                 rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 strong: Optional[RandAugment] = None,
                 batch_transform: Optional[BatchTransform] = None):
        check_loader_args(batch_size, rank, world_size, seed)
        C, H, W = split.images.shape[1:]
        check_norm(mean, std, C)
        if augment is not None and augment.crop and augment.pad_mode == "reflect" \
                and augment.pad >= min(H, W):
            raise ValueError(f"reflect padding {augment.pad} is too large for {H}x{W} images")
        if strong is not None and not isinstance(strong, RandAugment):
            raise TypeError(f"strong must be a RandAugment spec, got {type(strong).__name__}")
        if strong is not None and batch_transform is not None:
            raise ValueError("batch_transform is not supported together with a strong view yet")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment = augment if augment is not None and augment.active else None
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last = channels_last
        self.strong, self.batch_transform = strong, batch_transform
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

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before dropping a short batch)."""
        return shard_size(len(self.labels), self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def views(self) -> tuple[str, ...]:
        """The images of a batch, in order: ``("weak",)`` or ``("weak", "strong")``."""
        return ("weak",) if self.strong is None else ("weak", "strong")

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices of ``epoch`` (CPU int64), in batch order."""
        return shard_order(len(self.labels), epoch, seed=self.seed, shuffle=self.shuffle,
                           drop_last=self.drop_last, rank=self.rank, world_size=self.world_size)

    def augment_params(self, epoch: int, n: int) -> Optional[AugParams]:
        if self.augment is None:
            return None
        return self.augment.sample(n, _generator(self.seed, _AUGMENT, epoch, self.rank))

    def strong_params(self, epoch: int, n: int) -> Optional[tuple[Optional[AugParams],
                                                                  RandAugmentParams]]:
        """The strong view's crop/flip (on the generator's device: CPU) and
        RandAugment parameters (host) for ``n`` samples of ``epoch``."""
        if self.strong is None:
            return None
        gen = _generator(self.seed, _STRONG, epoch, self.rank)
        crop = self.augment.sample(n, gen) if self.augment is not None else None
        return crop, self.strong.sample(n, gen)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> float32 normalised (channels-last if asked)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # on uint8: 4x less to move
        # two in-place passes: ~3x faster on CPU than one broadcast addcmul
        return x.float().mul_(self._scale).add_(self._shift)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self.epoch
        self.epoch += 1
        order = self.order(epoch)
        params = self.augment_params(epoch, len(order))
        strong = self.strong_params(epoch, len(order))
        order = order.to(self.device, non_blocking=True)
        if params is not None:
            params = params.to(self.device)
        if strong is not None and strong[0] is not None:
            strong = (strong[0].to(self.device), strong[1])
        return self._batches(order, params, strong)

    def _crop(self, x: torch.Tensor, params: Optional[AugParams]) -> torch.Tensor:
        if params is None:
            return x
        return augment_batch(x, params, self.augment.pad, self.augment.pad_mode)

    def _batches(self, order: torch.Tensor, params: Optional[AugParams], strong=None):
        b = self.batch_size
        for k in range(len(self)):
            sl = slice(k * b, (k + 1) * b)
            idx = order[sl]
            x = self.images.index_select(0, idx)  # (much faster than images[idx] on CPU)
            xw = self._crop(x, None if params is None else params.take(sl))
            y = self.labels.index_select(0, idx)
            if strong is None:
                xw = self.normalize(xw)
                if self.batch_transform is not None:
                    xw, y = self.batch_transform(xw, y, idx)
                yield xw, y, idx
                continue
            crop, ra = strong
            xs = self._crop(x, None if crop is None else crop.take(sl))
            xs = self.strong.apply(xs, ra.take(sl))
            yield self.normalize(xw), self.normalize(xs), y, idx
