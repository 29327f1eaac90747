"""Training methods by name (``ktgfast train --method NAME``): each a step
class in its own file, imported lazily so a method's dependencies load only
when it is used.  A step says what a batch is, returns per-node losses, and
owns its state (see ``base.Step``); the run loop (``ktgfast.train.run``) does
the rest."""
from __future__ import annotations

import importlib

from ...graph import resolve_graph

# name -> "module:class"
STEPS: dict[str, str] = {
    "ktg": "ktgfast.train.steps.ktg:KTGStep",
    "ssl": "ktgfast.train.steps.ssl:SemiSupervisedStep",
    "self-distill": "ktgfast.train.steps.self_distill:SelfDistillStep",
    "ban": "ktgfast.train.steps.self_distill:BornAgainStep",
    "distill": "ktgfast.train.steps.distill:DistillStep",
}
# What ``ktgfast train --method`` offers (distill has its own command).
TRAIN_METHODS = ("ktg", "ssl", "self-distill", "ban")


def step_class(method: str):
    if method not in STEPS:
        raise ValueError(f"unknown training method {method!r}; allowed: {', '.join(STEPS)}")
    module, name = STEPS[method].split(":")
    return getattr(importlib.import_module(module), name)


def resolve_method(method: str | None, graph, config, graph_params=None) -> str:
    """``method``, or for None the one a graph asks for: ``ssl`` for a
    semi-supervised graph or a config with ``labels_per_class``, else ``ktg``."""
    if method is not None:
        step_class(method)  # an unknown name fails here, before any work
        return method
    return "ssl" if wants_semi_supervised(graph, config, graph_params) else "ktg"


def wants_semi_supervised(graph, config, graph_params=None) -> bool:
    """Whether ``Trainer(graph, data, config)`` is a semi-supervised run."""
    if config is not None and config.labels_per_class is not None:
        return True
    if isinstance(graph, str):
        graph = resolve_graph(graph, **(graph_params or {}))
    return bool(getattr(graph, "semi_supervised", False))


__all__ = ["STEPS", "TRAIN_METHODS", "resolve_method", "step_class", "wants_semi_supervised"]
