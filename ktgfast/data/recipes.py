"""Per-dataset training recipes: the default model, learning rate and
augmentation of each dataset, in one place beside the datasets.

The CIFAR recipe is the thesis's (SGD with Nesterov momentum 0.9, lr 0.1,
batch 64; Minami et al. 2020, §3.3).  The tiny MNIST CNN spikes in its first
steps even at lr 0.05 and, once peers pull each other through KL, can collapse
to the uniform output, so digits get 0.02.  Digits are not mirror-symmetric:
they are cropped but never flipped.

``schedule`` is what ``config.schedule: auto`` becomes.  CIFAR keeps the
thesis's multistep schedule (lr ÷ 10 at 60/120/180 of 200 epochs, i.e. 30/60/90 %
of the epochs asked for).  The bundled data and other datasets take cosine
annealing per epoch (Loshchilov & Hutter 2017): short runs on them are the
common case, and multistep squeezed into a few epochs trains most steps at
lr/100 or below (docs/rampup.md has the measurement).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    model: str            # what a node with model "auto" becomes
    lr: float             # the learning rate when config.lr is None
    augment: str          # what config.augment "auto" becomes
    schedule: str = "cosine"  # what config.schedule "auto" becomes


RECIPES: dict[str, Recipe] = {
    "mnist5k": Recipe("cnn_small", 0.02, "crop"),
    "synthetic": Recipe("cnn_small", 0.02, "crop_flip"),
    "cifar10": Recipe("resnet32", 0.1, "crop_flip", "multistep"),
    "cifar100": Recipe("resnet32", 0.1, "crop_flip", "multistep"),
}


def recipe(dataset) -> Recipe:
    """The recipe of a loaded dataset (by name; other datasets by image size)."""
    if dataset.name in RECIPES:
        return RECIPES[dataset.name]
    return Recipe("resnet32" if dataset.image_size <= 32 else "resnet18", 0.1, "crop_flip")


def default_model(dataset) -> str:
    return recipe(dataset).model


def lr_help() -> str:
    """The ``--lr`` default as a user reads it in ``--help``."""
    by_lr: dict[float, list[str]] = {}
    for name, r in RECIPES.items():
        by_lr.setdefault(r.lr, []).append(name)
    return ", ".join(f"{lr:g} for {'/'.join(names)}" for lr, names in by_lr.items())


__all__ = ["RECIPES", "Recipe", "default_model", "lr_help", "recipe"]
