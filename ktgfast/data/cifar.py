"""CIFAR-10 / CIFAR-100 from the official python-pickle release.

Layout under ``root`` (what the official tarballs unpack to)::

    cifar-10-batches-py/  data_batch_1..5, test_batch, batches.meta
    cifar-100-python/     train, test, meta   (fine_labels + coarse_labels)

Every file is checked against the official md5 before use (``CIFAR_SPECS``
holds them; tests swap in the digests of their fixtures).  Each pickle holds
``data``: uint8 ``(N, 3072)``, the R, G and B planes of a 32x32 image in turn,
so a reshape to ``(N, 3, 32, 32)`` is already channels-first.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset, register_dataset
from .integrity import IntegrityError, extract, fetch, md5sum, verify_md5
from .split import Split

DEFAULT_ROOT = "~/.cache/ktgfast/data"  # overridden by $KTGFAST_DATA


@dataclass
class CifarSpec:
    title: str
    folder: str
    url: str
    archive_md5: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    md5: dict[str, str] = field(default_factory=dict)
    coarse: bool = False

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def files(self) -> tuple[str, ...]:
        return self.train + self.test + (self.meta,)


CIFAR_SPECS = {
    "cifar10": CifarSpec(
        title="CIFAR-10", folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",),
        meta="batches.meta", label_key="labels", names_key="label_names",
        # per-channel statistics of the 50k training images (the usual constants)
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100", folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=("train",), test=("test",), meta="meta",
        label_key="fine_labels", names_key="fine_label_names",
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
        coarse=True,
    ),
}


def data_root(root: str | os.PathLike | None) -> Path:
    return Path(root if root is not None else os.environ.get("KTGFAST_DATA", DEFAULT_ROOT)).expanduser()


def _intact(spec: CifarSpec, base: Path, check_integrity: bool) -> bool:
    return all((base / f).is_file() and (not check_integrity or md5sum(base / f) == spec.md5[f])
               for f in spec.files)


def _unpickle(path: Path, fix: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")  # the release was pickled by Python 2
    except Exception as exc:
        raise IntegrityError(f"{path}: not a readable CIFAR pickle ({type(exc).__name__}: {exc}). "
                             f"{fix}") from exc
    if not isinstance(obj, dict):
        raise IntegrityError(f"{path}: expected a pickled dict, got {type(obj).__name__}. {fix}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(entry: dict, key: str, path: Path, fix: str):
    if key not in entry:
        raise IntegrityError(f"{path}: no {key!r} entry (has {sorted(entry)}). {fix}")
    return entry[key]


def _read(spec: CifarSpec, base: Path, names: tuple[str, ...], first_id: int, fix: str) -> Split:
    images, labels, coarse = [], [], []
    for name in names:
        path = base / name
        entry = _unpickle(path, fix)
        data = np.asarray(_field(entry, "data", path, fix))
        y = np.asarray(_field(entry, spec.label_key, path, fix), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                or len(y) != len(data):
            raise IntegrityError(f"{path}: expected uint8 data (N, 3072) and N labels, got "
                                 f"{data.dtype} {data.shape} and {len(y)} labels. {fix}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
        if spec.coarse:
            coarse.append(np.asarray(_field(entry, "coarse_labels", path, fix), dtype=np.int64))
    n = sum(len(y) for y in labels)
    return Split(
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(np.concatenate(labels)),
        torch.from_numpy(np.concatenate(coarse)) if spec.coarse else None,
        torch.arange(first_id, first_id + n, dtype=torch.int64),
    )


def _superclass_map(train: Split, num_classes: int, path: Path, fix: str) -> torch.Tensor:
    """fine -> coarse from the training labels; each fine class has one coarse."""
    smap = torch.full((num_classes,), -1, dtype=torch.int64)
    smap[train.labels] = train.coarse_labels
    if (smap[train.labels] != train.coarse_labels).any():
        raise IntegrityError(f"{path}: a fine class has more than one coarse label. {fix}")
    absent = torch.nonzero(smap < 0).flatten().tolist()
    if absent:
        raise IntegrityError(f"{path}: fine classes {absent} never occur, so their superclass "
                             f"is unknown. {fix}")
    return smap


def load_cifar(key: str, root, download: bool, check_integrity: bool = True) -> Dataset:
    spec = CIFAR_SPECS[key]
    top = data_root(root)
    base = top / spec.folder
    fix = (f"Delete {base} and re-download it (get_dataset({key!r}, root={str(top)!r}, "
           f"download=True)).")
    if download and not _intact(spec, base, check_integrity):
        extract(fetch(spec.url, top / spec.archive, spec.archive_md5), top)
    missing = [f for f in spec.files if not (base / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{spec.title} not found: {base} lacks {', '.join(missing)}. Pass download=True to "
            f"fetch {spec.url}, or point root at the folder that contains {spec.folder}/.")
    if check_integrity:
        for f in spec.files:
            verify_md5(base / f, spec.md5[f], fix)

    meta = _unpickle(base / spec.meta, fix)
    classes = tuple(str(c) for c in _field(meta, spec.names_key, base / spec.meta, fix))
    train = _read(spec, base, spec.train, 0, fix)
    test = _read(spec, base, spec.test, len(train), fix)
    num_classes = len(classes)
    for split, names in ((train, spec.train), (test, spec.test)):
        if len(split) and not 0 <= int(split.labels.min()) <= int(split.labels.max()) < num_classes:
            raise IntegrityError(f"{base / names[0]}: labels outside 0..{num_classes - 1}. {fix}")
    extra = {}
    if spec.coarse:
        coarse_names = tuple(str(c) for c in _field(meta, "coarse_label_names", base / spec.meta, fix))
        extra = dict(superclass_map=_superclass_map(train, num_classes, base / spec.train[0], fix),
                     num_coarse_classes=len(coarse_names), meta={"coarse_classes": coarse_names})
    return Dataset(name=key, num_classes=num_classes, channels=3, image_size=32,
                   mean=spec.mean, std=spec.std, train=train, val=None, test=test,
                   classes=classes, **extra)


@register_dataset("cifar10")
def _cifar10(root, download, seed, *, check_integrity: bool = True) -> Dataset:
    return load_cifar("cifar10", root, download, check_integrity)


@register_dataset("cifar100")
def _cifar100(root, download, seed, *, check_integrity: bool = True) -> Dataset:
    return load_cifar("cifar100", root, download, check_integrity)
