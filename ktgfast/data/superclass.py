"""Superclass maps (fine class -> superclass) for superclass-aware mixup
(docs/methods.md#superclass-aware-mixup).  CIFAR-100 brings its own (the files' ``coarse_labels``); any other
dataset takes a user map, and MNIST has a documented default by digit shape."""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence, Union

import torch

MapSource = Union[str, "os.PathLike[str]", Mapping, Sequence]

# Default superclasses of the ten digits, by the strokes a digit is drawn with:
#   0 "loop"     -- a closed loop:            0, 6, 8, 9
#   1 "straight" -- straight strokes only:    1, 4, 7
#   2 "curve"    -- open curves, no loop:     2, 3, 5
DIGIT_SUPERCLASS_NAMES = ("loop", "straight", "curve")
DIGIT_SUPERCLASSES = {0: 0, 6: 0, 8: 0, 9: 0, 1: 1, 4: 1, 7: 1, 2: 2, 3: 2, 5: 2}


def _fine_index(key, num_classes: int, class_names: Sequence[str]) -> int | None:
    """A map key as a class index: an int, a digit string (JSON keys are
    strings) or a class name; None if it names no class."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if 0 <= key < num_classes else None
    if isinstance(key, str):
        if key in class_names:
            return list(class_names).index(key)
        if key.strip().lstrip("-").isdigit():
            return _fine_index(int(key), num_classes, class_names)
    return None


def load_superclass_map(source: MapSource, num_classes: int,
                        class_names: Sequence[str] = ()) -> torch.Tensor:
    """The int64 ``(num_classes,)`` table fine class -> superclass.

    ``source``: a path to a JSON file, or the decoded object itself: either a
    dict ``{fine_class: superclass}`` (keys are class indices, digit strings or
    names from ``class_names``) or a list whose i-th entry is class i's
    superclass.  Superclasses are non-negative ints, or names numbered in sorted
    order.  Every class must be mapped exactly once (errors list the culprits).
    """
    where = "superclass map"
    if isinstance(source, (str, os.PathLike)):
        where = f"superclass map {os.fspath(source)}"
        try:
            with open(source, encoding="utf-8") as f:
                source = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {where}: {exc}") from exc
    if isinstance(source, Mapping):
        items = list(source.items())
    elif isinstance(source, Sequence):
        items = list(enumerate(source))  # too long or short: caught as bad keys / missing
    else:
        raise ValueError(f"{where}: expected a dict or list, got {type(source).__name__}")

    fine, bad = {}, []
    for key, sup in items:
        i = _fine_index(key, num_classes, class_names)
        if i is None or i in fine:
            bad.append(key)
        else:
            fine[i] = sup
    if bad:
        raise ValueError(f"{where}: keys that are not classes 0..{num_classes - 1} (or are "
                         f"repeated): {bad}")
    missing = [i for i in range(num_classes) if i not in fine]
    if missing:
        raise ValueError(f"{where} does not cover every class: missing {missing}")

    values = [fine[i] for i in range(num_classes)]
    if all(isinstance(v, str) for v in values):
        names = sorted(set(values))
        values = [names.index(v) for v in values]
    elif not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ValueError(f"{where}: superclasses must be all non-negative ints or all names, "
                         f"got {sorted(set(map(repr, values)))}")
    return torch.tensor(values, dtype=torch.int64)
