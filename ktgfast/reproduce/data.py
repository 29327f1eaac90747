"""The data of a recipe: the real dataset through ``ktgfast.data`` (CIFAR
through its own loader, Stanford Dogs through ``imagefolder``), or for
``--dry-run`` synthetic data of the same shape (channels, image size, classes,
superclasses) from ``ktgfast.data``'s ``synthetic`` dataset, small enough for
a few steps on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..data import get_dataset


@dataclass(frozen=True)
class DataSource:
    dataset: str            # the ktgfast.data name
    title: str
    channels: int
    image_size: int
    num_classes: int
    options: dict = field(default_factory=dict)
    superclass_size: int | None = None  # fine classes per superclass (CIFAR-100: 5 of each of 20)
    layout: str = ""        # what --data-root must hold

    def load(self, data_root: str | None, download: bool, val_size) -> object:
        if self.dataset == "imagefolder" and data_root is None:
            raise ValueError(f"{self.title} is read by the imagefolder dataset: --data-root must be "
                             f"{self.layout}")
        ds = get_dataset(self.dataset, root=data_root, download=download, val_size=val_size, seed=0,
                         **self.options)
        if ds.num_classes != self.num_classes:
            raise ValueError(f"{self.title}: {data_root!r} holds {ds.num_classes} classes, the paper's "
                             f"dataset has {self.num_classes}")
        return ds

    def synthetic(self, n_train: int, n_test: int, val: int | None) -> object:
        """Learnable synthetic images of this dataset's shape (``ktgfast.data.synthetic``);
        the superclass map groups consecutive classes as CIFAR-100's 20 x 5."""
        opts = dict(n_train=n_train + (val or 0), n_test=n_test, num_classes=self.num_classes,
                    channels=self.channels, image_size=self.image_size)
        if self.superclass_size:
            opts["superclasses"] = [c // self.superclass_size for c in range(self.num_classes)]
        return get_dataset("synthetic", val_size=val, seed=0, **opts)


SOURCES: dict[str, DataSource] = {
    "cifar100": DataSource("cifar100", "CIFAR-100", 3, 32, 100, superclass_size=5,
                           layout="the folder holding cifar-100-python/ (or pass --download true)"),
    "cifar10": DataSource("cifar10", "CIFAR-10", 3, 32, 10,
                          layout="the folder holding cifar-10-batches-py/ (or pass --download true)"),
    # Images resized on load so the short side is 224 and centre-cropped (docs/reproduce.md
    # says how this differs from the thesis's random-resized crops).
    "stanford_dogs": DataSource("imagefolder", "Stanford Dogs", 3, 224, 120, {"image_size": 224},
                                layout="a folder with train/<breed>/*.jpg and test/<breed>/*.jpg in the "
                                       "official 12,000 / 8,580 split (python -m "
                                       "ktgfast.reproduce.stanford_dogs SRC DST builds it)"),
}


__all__ = ["DataSource", "SOURCES"]
