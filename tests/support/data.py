"""Tiny data sets shared by the training tests: tests/conftest.py's ``data``
fixture is :func:`tiny_data`; a module that needs a variant (another image
size, more classes) calls it with keywords."""
from __future__ import annotations

from ktgfast.data import get_dataset

CLASSES = 4


def tiny_data(image_size: int = 8, **kw):
    """192 train / 64 val / 64 test grey images, 4 classes; noisy enough that
    one epoch does not already give 100 % everywhere."""
    opts = dict(n_train=256, n_test=64, num_classes=CLASSES, channels=1, image_size=image_size,
                noise=150.0)
    opts.update(kw)
    return get_dataset("synthetic", val_size=64, **opts)
