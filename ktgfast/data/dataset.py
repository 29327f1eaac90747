"""The ``Dataset`` record and the registry of dataset builders.

A builder is ``fn(root, download, seed, *, <options>) -> Dataset``; its
keyword-only parameters are the options ``get_dataset`` accepts for it, so an
unknown option is caught before any file is touched.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .split import Split, carve_validation, concat_splits
from .superclass import load_superclass_map


@dataclass
class Dataset:
    """An in-memory dataset: splits plus what models and loaders need to know.

    ``mean`` / ``std`` are per channel in [0, 1] units (for normalisation).
    ``val`` is None when the dataset has no validation split.  When superclasses
    are known, ``superclass_map`` is the int64 ``(num_classes,)`` fine -> coarse
    table and every split carries ``coarse_labels``.
    """

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Split
    val: Optional[Split]
    test: Split
    classes: tuple[str, ...] = ()
    num_coarse_classes: Optional[int] = None
    superclass_map: Optional[torch.Tensor] = None
    kind: str = "memory"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean/std need {self.channels} values")

    @property
    def splits(self) -> dict[str, Split]:
        out = {"train": self.train, "val": self.val, "test": self.test}
        return {k: v for k, v in out.items() if v is not None}


DatasetInfo = Dataset  # alias: the record describes the data as much as it holds it

Builder = Callable[..., Dataset]
DATASETS: dict[str, Builder] = {}
GENERIC_OPTIONS = ("superclasses",)  # handled here, valid for every dataset


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``fn(root, download, seed, *, options...)`` as ``name``."""
    def deco(fn: Builder) -> Builder:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def dataset_options(name: str) -> dict[str, object]:
    """The options of dataset ``name`` with their defaults."""
    params = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def _builder(name: str) -> Builder:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    return DATASETS[name]


def get_dataset(name: str, root: str | None = None, download: bool = False,
                val_size: int | float | None = None, seed: int = 0, **options) -> Dataset:
    """Build dataset ``name`` (see ``list_datasets()``).

    ``root``: where the files live (ignored by embedded/synthetic data).
    ``download``: fetch missing or corrupt files (datasets with a download URL).
    ``val_size``: when given, ``val`` is re-carved, stratified, from all non-test
    data (``train`` plus any built-in ``val``): an int is a count, a float a
    fraction.  ``seed`` drives that carving (and synthetic data); the test split
    never changes.  ``superclasses`` (any dataset): a JSON path, dict or list
    for ``load_superclass_map``, overriding a dataset's own superclasses.
    Other ``options`` are the builder's keyword-only parameters.
    """
    builder = _builder(name)
    superclasses = options.pop("superclasses", None)
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(sorted(allowed) + list(GENERIC_OPTIONS))
        raise ValueError(f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"valid options: {valid}")
    ds = builder(root, download, seed, **options)
    if superclasses is not None:
        ds = with_superclasses(ds, load_superclass_map(superclasses, ds.num_classes, ds.classes))
    if val_size is not None:
        pool = ds.train if ds.val is None else concat_splits([ds.train, ds.val])
        train, val = carve_validation(pool, val_size, seed)
        ds = dataclasses.replace(ds, train=train, val=val)
    return ds


def with_superclasses(ds: Dataset, smap: torch.Tensor) -> Dataset:
    """``ds`` with ``coarse_labels = smap[labels]`` on every split."""
    def tag(s: Split | None):
        return None if s is None else dataclasses.replace(s, coarse_labels=smap[s.labels])

    return dataclasses.replace(ds, train=tag(ds.train), val=tag(ds.val), test=tag(ds.test),
                               superclass_map=smap, num_coarse_classes=int(smap.max()) + 1)
