"""Loader selection: ``--loader auto|tensor|torch|dali``.

``LOADERS`` maps names to factories ``fn(split, batch_size, **options)``;
``resolve_loader(kind, dataset, device)`` turns a requested kind into a
loader name plus a one-line reason for the log, and ``make_loader`` builds it.

``auto``:

* in-memory datasets (``Dataset.kind == "memory"``: MNIST, CIFAR, synthetic,
  imagefolder as loaded today) -> ``tensor`` on every device.  On CPU it is
  the fastest loader measured (``benchmarks/test_bench_loaders.py``; numbers
  in ``benchmarks/README.md``): CIFAR-shaped batches of 128, 2 cores, pad-crop
  + flip + normalise: 14-28x the torch ``DataLoader`` (2 workers) and 2.4-5x
  DALI's CPU pipeline; with a second, RandAugment view: 7-8x both.  On a GPU it is
  expected to lead as well (data stays on the device, a batch is a few kernel
  launches, no per-batch image transfer); not measured here.
* file datasets (``kind == "file"``, decoded per batch) -> ``dali`` on a CUDA
  device when ``ktgfast.data.dali`` and NVIDIA DALI are available (GPU JPEG
  decode and augmentation), else ``torch``.

``dali`` is imported lazily from ``ktgfast.data.dali`` (``DaliLoader``,
``dali_available``); asking for it where it cannot run raises
``LoaderUnavailableError`` with the reason, while ``auto`` falls back.
"""
from __future__ import annotations

import importlib
import logging
from typing import Callable, Optional, Sequence, Union

import torch

from .augment import Augment
from .dataset import Dataset
from .randaugment import RandAugment
from .split import Split
from .tensor_loader import BatchTransform, TensorLoader
from .torch_loader import TorchLoader

log = logging.getLogger(__name__)

LOADER_NAMES = ("tensor", "torch", "dali")
LOADER_CHOICES = ("auto",) + LOADER_NAMES
DATASET_KINDS = ("memory", "file")


class LoaderUnavailableError(RuntimeError):
    """The requested loader cannot run here (e.g. DALI is not installed)."""


def dali_status() -> tuple[bool, str]:
    """``(usable, reason)`` for the DALI loader; never raises."""
    try:
        mod = importlib.import_module("ktgfast.data.dali")
    except ImportError as e:  # the module, or DALI under it, is missing
        return False, f"ktgfast.data.dali cannot be imported ({e})"
    if not hasattr(mod, "DaliLoader"):
        return False, "ktgfast.data.dali has no DaliLoader"
    check = getattr(mod, "dali_available", None)
    try:
        ok = bool(check()) if check is not None else True
    except Exception as e:  # noqa: BLE001 - a broken install is "unavailable"
        return False, f"dali_available() failed: {e}"
    if not ok:
        return False, "NVIDIA DALI is not installed or not usable (dali_available() is False)"
    return True, "NVIDIA DALI is available"


def _dali_loader(split: Split, batch_size: int, *, strong=None, num_workers: Optional[int] = None,
                 **options):
    """``DaliLoader`` with this package's options: a ``RandAugment`` strong view
    becomes DALI's ``RandAugmentSpec`` (DALI's own op suite; all ops, integer
    ``m``, same fill), ``num_workers`` its ``num_threads``."""
    ok, why = dali_status()
    if not ok:
        raise LoaderUnavailableError(f"loader 'dali' is unavailable: {why}")
    dali = importlib.import_module("ktgfast.data.dali")

    if isinstance(strong, RandAugment):
        if not strong.standard:
            raise ValueError("loader 'dali' uses DALI's RandAugment: it needs all ops, an "
                             "integer m and random_magnitude=False")
        strong = dali.RandAugmentSpec(n=strong.n, m=int(strong.m), fill_value=strong.fill)
    if strong is not None:
        options["strong"] = strong
    if num_workers is not None:
        options["num_threads"] = num_workers
    return dali.DaliLoader(split, batch_size, **options)


LOADERS: dict[str, Callable] = {
    "tensor": TensorLoader,
    "torch": TorchLoader,
    "dali": _dali_loader,
}


def _check_kind(kind: str) -> None:
    if kind not in LOADER_CHOICES:
        raise ValueError(f"unknown loader {kind!r}; choose one of {', '.join(LOADER_CHOICES)}")


def _dataset_kind(dataset: Union[Dataset, str, None]) -> tuple[str, str]:
    """``(kind, description)`` of a Dataset, a kind string or None (memory)."""
    if dataset is None:
        return "memory", "in-memory dataset"
    if isinstance(dataset, str):
        kind, desc = dataset, f"{dataset} dataset"
    else:
        kind, desc = dataset.kind, f"{dataset.kind} dataset {dataset.name!r}"
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; "
                         f"expected one of {', '.join(DATASET_KINDS)}")
    return kind, desc


def resolve_loader(kind: str, dataset: Union[Dataset, str, None] = None,
                   device: Union[str, torch.device] = "cpu") -> tuple[str, str]:
    """``(name, reason)``: the loader to build for ``kind`` (one of
    ``LOADER_CHOICES``), ``dataset`` (a ``Dataset``, its kind ``"memory"`` |
    ``"file"``, or None for memory) and ``device``; the caller logs
    ``reason``.  Raises ``ValueError`` for an unknown or unsuitable name and
    ``LoaderUnavailableError`` for ``dali`` where it cannot run."""
    _check_kind(kind)
    dkind, desc = _dataset_kind(dataset)
    dev = torch.device(device)
    if kind == "tensor":
        if dkind != "memory":
            raise ValueError(f"loader 'tensor' needs an in-memory dataset, got a {desc}")
        return "tensor", f"loader 'tensor' (requested) for the {desc} on {dev}"
    if kind == "torch":
        return "torch", f"loader 'torch' (requested) for the {desc} on {dev}"
    if kind == "dali":
        ok, why = dali_status()
        if not ok:
            raise LoaderUnavailableError(f"loader 'dali' is unavailable: {why}")
        return "dali", f"loader 'dali' (requested) for the {desc} on {dev}"
    # auto
    if dkind == "memory":
        if dev.type == "cpu":
            why = ("the fastest loader measured on CPU (benchmarks/test_bench_loaders.py: "
                   "ahead of the torch DataLoader and DALI CPU)")
        else:
            why = "uint8 data stays on the device, batched augmentation, no per-batch host work"
        return "tensor", f"loader auto -> 'tensor' for the {desc} on {dev}: {why}"
    ok, why = dali_status()
    if dev.type == "cuda" and ok:
        return "dali", f"loader auto -> 'dali' for the {desc} on {dev}: GPU decode and augmentation"
    reason = "DALI serves file datasets on CUDA devices only" if ok else why
    return "torch", f"loader auto -> 'torch' for the {desc} on {dev}: {reason}"


def make_loader(kind: str, split: Split, batch_size: int, *, device="cpu",
                dataset: Union[Dataset, str, None] = None, shuffle: bool = True,
                drop_last: bool = True, augment: Optional[Augment] = None,
                strong: Optional[RandAugment] = None, mean: Sequence[float],
                std: Sequence[float], seed: int = 0, rank: int = 0, world_size: int = 1,
                channels_last: bool = False, batch_transform: Optional[BatchTransform] = None,
                num_workers: int = 2):
    """Build loader ``kind`` (``auto`` resolves via ``resolve_loader`` and logs
    the reason at INFO) over ``split``.  All loaders take the common options
    and yield ``(x, y, idx)``, or ``(x_weak, x_strong, y, idx)`` with
    ``strong``; ``num_workers`` is the torch loader's worker processes and
    DALI's ``num_threads`` (unused by the tensor loader).  Options a
    loader lacks (``strong``, ``batch_transform``, ``channels_last``) are
    passed only when set, so an unsupported one fails loudly."""
    name, reason = resolve_loader(kind, dataset, device)
    if kind == "auto":
        log.info(reason)
    options = dict(shuffle=shuffle, drop_last=drop_last, augment=augment, mean=mean, std=std,
                   device=device, seed=seed, rank=rank, world_size=world_size)
    if strong is not None:
        options["strong"] = strong
    if batch_transform is not None:
        options["batch_transform"] = batch_transform
    if channels_last:
        options["channels_last"] = True
    if name in ("torch", "dali"):
        options["num_workers"] = num_workers
    return LOADERS[name](split, batch_size, **options)


__all__ = ["DATASET_KINDS", "LOADERS", "LOADER_CHOICES", "LOADER_NAMES", "LoaderUnavailableError",
           "dali_status", "make_loader", "resolve_loader"]
