"""Small image-folder datasets, decoded once into memory.

Layout: ``root/train/<class>/*.{png,jpg,jpeg}`` plus ``root/test/<class>/...``
and optionally ``root/val/<class>/...``.  With no ``test`` folder, ``val`` is the
test split (the Tiny-ImageNet convention: its real test labels are private).
Classes are the sorted folder names of ``train``.  Each image is resized so its
short side is ``image_size`` and centre-cropped to a square (aspect kept).
Large file datasets belong to the DALI pipelines, not here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset, register_dataset
from .split import Split

EXTENSIONS = (".png", ".jpg", ".jpeg")
MODES = {1: "L", 3: "RGB"}  # channels -> PIL mode


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with torchvision
        raise RuntimeError("the imagefolder dataset needs Pillow: pip install pillow") from exc
    return Image


def _load_image(path: Path, size: int, mode: str) -> np.ndarray:
    Image = _pil()
    with Image.open(path) as im:
        im = im.convert(mode)
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def _read_split(folder: Path, classes: list[str], size: int, mode: str, first_id: int) -> Split:
    unknown = sorted(set(_class_dirs(folder)) - set(classes))
    if unknown:
        raise ValueError(f"{folder}: class folders {unknown} do not exist under train/")
    images, labels = [], []
    for c, name in enumerate(classes):
        d = folder / name
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in EXTENSIONS) if d.is_dir() else []
        for p in files:
            try:
                images.append(_load_image(p, size, mode))
            except Exception as exc:
                raise ValueError(f"{p}: cannot decode image ({exc})") from exc
            labels.append(c)
    if not images:
        raise FileNotFoundError(f"{folder}: no {'/'.join(EXTENSIONS)} images in any class folder")
    n = len(labels)
    return Split(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64),
                 ids=torch.arange(first_id, first_id + n, dtype=torch.int64))


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.double().div_(255).transpose(0, 1).flatten(1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1, correction=0).clamp_min(1e-3).tolist())


@register_dataset("imagefolder")
def _imagefolder(root, download, seed, *, image_size: int = 64, channels: int = 3) -> Dataset:
    """``mean``/``std`` are measured on the train split."""
    if root is None:
        raise ValueError("imagefolder needs root=<folder with train/ and test/ (or val/)>")
    if channels not in MODES:
        raise ValueError(f"imagefolder: channels must be one of {sorted(MODES)}, got {channels}")
    root = Path(root).expanduser()
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise FileNotFoundError(f"imagefolder: {train_dir} does not exist "
                                f"(expected {root}/train/<class>/*.png|jpg)")
    classes = _class_dirs(train_dir)
    if not classes:
        raise FileNotFoundError(f"imagefolder: {train_dir} has no class folders")
    held = [d for d in ("test", "val") if (root / d).is_dir()]
    if not held:
        raise FileNotFoundError(f"imagefolder: {root} has neither test/ nor val/")
    mode = MODES[channels]
    train = _read_split(train_dir, classes, image_size, mode, 0)
    test = _read_split(root / held[0], classes, image_size, mode, len(train))
    val = None
    if held == ["test", "val"]:
        val = _read_split(root / "val", classes, image_size, mode, len(train) + len(test))
    mean, std = _channel_stats(train.images)
    return Dataset(name="imagefolder", num_classes=len(classes), channels=channels,
                   image_size=image_size, mean=mean, std=std, train=train, val=val, test=test,
                   classes=tuple(classes), meta={"root": str(root), "test_folder": held[0]})
