"""``Trainer``: the run loop (``run.py``) with a method's step (``steps/``).
Kept as the import path of earlier releases."""
from ..data.recipes import default_model
from .run import EpochLosses, NonFiniteLossError, Trainer, resolve_device

__all__ = ["EpochLosses", "NonFiniteLossError", "Trainer", "default_model", "resolve_device"]
