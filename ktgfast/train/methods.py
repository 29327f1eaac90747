"""Training methods by name for ``ktgfast train --method NAME`` (the registry
itself is ``ktgfast.train.steps.STEPS``)."""
from __future__ import annotations

from .steps import TRAIN_METHODS


def trainer_class(method: str):
    """A callable ``(graph, data, config, *, resume, graph_params)`` -> trainer
    (``method`` None: the one the graph asks for)."""
    from functools import partial

    from .run import Trainer

    if method is not None and method not in TRAIN_METHODS:
        raise ValueError(f"unknown training method {method!r}; allowed: {', '.join(TRAIN_METHODS)}")
    return partial(Trainer, method=method)


__all__ = ["TRAIN_METHODS", "trainer_class"]
