"""Reference loader: a standard ``torch.utils.data.DataLoader`` with
torchvision (v2) transforms, per-sample in worker processes.

It serves the same in-memory ``Split`` with the same contract as
``TensorLoader`` -- ``(x, y, idx)``, or ``(x_weak, x_strong, y, idx)`` with a
strong view -- and the same sample order (``shard_order``: one seeded
permutation per epoch, contiguous rank shards, ``drop_last`` trimming), so
the two can be swapped and compared; only the augmentation's random draws
differ.  Transforms per sample: ``RandomCrop(size, padding, reflect|constant)
-> RandomHorizontalFlip -> [RandAugment] -> ToDtype(float32, scale) ->
Normalize``; RandAugment is torchvision's own (``num_ops = n``,
``magnitude = m`` on its 31-bin scale, nearest interpolation, ``fill``).

Reproducibility: torch's CPU RNG (which torchvision's transforms draw from)
is re-seeded by ``(seed, epoch, index)`` before each sample (in the main
process, with ``num_workers=0``, its state is restored afterwards), so
batches are the same for any ``num_workers`` and after ``set_epoch`` on
resume.  The sampler hands ``(index, epoch)`` pairs to
the workers, which lets them persist across epochs.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
import torch.utils.data as tud

from .augment import Augment
from .randaugment import RandAugment
from .loader_common import EpochMixin, check_loader_args, check_norm, shard_size
from .split import Split
from .tensor_loader import BatchTransform, shard_order

_MASK64 = (1 << 64) - 1


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixing ``(seed, epoch, index)`` (splitmix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB
         + 0x2545F4914F6CDD1D) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def _transforms(size: tuple[int, int], augment: Optional[Augment],
                strong: Optional[RandAugment], mean, std):
    from torchvision.transforms import v2

    steps = []
    if augment is not None and augment.crop and augment.pad > 0:
        mode = {"reflect": "reflect", "zero": "constant"}[augment.pad_mode]
        steps.append(v2.RandomCrop(size, padding=augment.pad, padding_mode=mode, fill=0))
    if augment is not None and augment.flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if strong is not None:
        steps.append(v2.RandAugment(num_ops=strong.n, magnitude=int(strong.m), fill=strong.fill))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


class _SplitDataset(tud.Dataset):
    """Map-style dataset over a Split, keyed by ``(index, epoch)``."""

    def __init__(self, split: Split, seed: int, weak, strong):
        self.images, self.labels = split.images, split.labels
        self.seed, self.weak, self.strong = seed, weak, strong

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]):
        i, epoch = key
        img = self.images[i]
        rng = torch.default_generator  # what torchvision's transforms draw from
        saved = rng.get_state() if tud.get_worker_info() is None else None  # main process
        rng.manual_seed(_sample_seed(self.seed, epoch, i))
        try:
            xw = self.weak(img)
            if self.strong is None:
                return xw, self.labels[i], i
            return xw, self.strong(img), self.labels[i], i
        finally:
            if saved is not None:
                rng.set_state(saved)


class _BatchSampler:
    """Batches of ``(index, epoch)`` of the loader's current epoch."""

    def __init__(self, loader: "TorchLoader"):
        self.loader = loader
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        L, b, epoch = self.loader, self.loader.batch_size, self.epoch
        order = L.order(epoch).tolist()
        return iter([[(i, epoch) for i in order[k * b:(k + 1) * b]] for k in range(len(L))])


class TorchLoader(EpochMixin):
    """``DataLoader`` reference with ``TensorLoader``'s interface: batches
    ``(x, y, idx)`` (or ``(x_weak, x_strong, y, idx)`` with ``strong``), ``x``
    float32 normalised on ``device``; ``set_epoch``, ``len``, ``num_samples``,
    ``order`` and the sharding rules are those of ``TensorLoader``.

    ``num_workers`` worker processes (default 2; 0: in this process) persist
    across epochs.  ``strong`` uses torchvision's RandAugment, so it must use
    every op, an integer ``m`` and no ``random_magnitude``.
    ``batch_transform``: as in ``TensorLoader``.
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = True, augment: Optional[Augment] = None,
                 mean: Sequence[float], std: Sequence[float], device="cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 strong: Optional[RandAugment] = None,
                 batch_transform: Optional[BatchTransform] = None, num_workers: int = 2,
                 pin_memory: Optional[bool] = None):
        check_loader_args(batch_size, rank, world_size, seed)
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        C, H, W = split.images.shape[1:]
        check_norm(mean, std, C)
        if strong is not None:
            if not isinstance(strong, RandAugment):
                raise TypeError(f"strong must be a RandAugment spec, got {type(strong).__name__}")
            if not strong.standard:
                raise ValueError("the torch loader uses torchvision's RandAugment: it needs all "
                                 "ops, an integer m and random_magnitude=False")
            if batch_transform is not None:
                raise ValueError("batch_transform is not supported together with a strong view yet")
        self.augment = augment if augment is not None and augment.active else None
        self.strong, self.batch_transform = strong, batch_transform
        self.device = torch.device(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last = channels_last
        self.n = len(split)
        weak_tf = _transforms((H, W), self.augment, None, mean, std)
        strong_tf = None if strong is None else _transforms((H, W), self.augment, strong, mean, std)
        self.dataset = _SplitDataset(split, seed, weak_tf, strong_tf)
        self.sampler = _BatchSampler(self)
        if pin_memory is None:
            pin_memory = self.device.type == "cuda"
        self.dataloader = tud.DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=num_workers,
            pin_memory=pin_memory, persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed))  # not the global RNG: see __getitem__
        self.epoch = 0

    @classmethod
    def eval(cls, split: Split, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
             device="cpu", rank: int = 0, world_size: int = 1, channels_last: bool = False,
             num_workers: int = 2) -> "TorchLoader":
        """Evaluation mode: no augmentation, no shuffle, no dropped samples."""
        return cls(split, batch_size, shuffle=False, drop_last=False, augment=None, mean=mean,
                   std=std, device=device, rank=rank, world_size=world_size,
                   channels_last=channels_last, num_workers=num_workers)

    @property
    def views(self) -> tuple[str, ...]:
        """The images of a batch, in order: ``("weak",)`` or ``("weak", "strong")``."""
        return ("weak",) if self.strong is None else ("weak", "strong")

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before dropping a short batch)."""
        return shard_size(self.n, self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices of ``epoch`` (CPU int64), in batch order."""
        return shard_order(self.n, epoch, seed=self.seed, shuffle=self.shuffle,
                           drop_last=self.drop_last, rank=self.rank, world_size=self.world_size)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        self.sampler.epoch = self.epoch
        self.epoch += 1
        return self._batches(iter(self.dataloader))

    def _batches(self, it):
        for batch in it:
            *xs, y, idx = batch
            xs = [self._to_device(x) for x in xs]
            y, idx = y.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)
            if self.batch_transform is not None:
                xs[0], y = self.batch_transform(xs[0], y, idx)
            yield (*xs, y, idx)
