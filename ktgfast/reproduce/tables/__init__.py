"""The paper tables ktgfast reproduces, one module per source (see each
module's docstring for the paper, the table and the recipe)."""
from __future__ import annotations

from ..recipe import Recipe
from . import ensemble_dogs, ktg_cifar100, mixup, self_distill, ssl_cifar

RECIPES: dict[str, Recipe] = {r.name: r for m in (ktg_cifar100, ensemble_dogs, ssl_cifar, self_distill, mixup)
                              for r in m.RECIPES}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; allowed: list, {', '.join(RECIPES)}")
    return RECIPES[name]


__all__ = ["RECIPES", "get_recipe"]
