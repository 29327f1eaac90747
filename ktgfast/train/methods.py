"""Training methods by name (``ktgfast train --method NAME``): each a trainer
class with the signature ``cls(graph, data, config, *, resume, graph_params)``,
imported lazily so a method's dependencies load only when it is used."""
from __future__ import annotations

import importlib

# name -> "module:class"
TRAIN_METHODS: dict[str, str] = {
    "ktg": "ktgfast.train.trainer:Trainer",
    "ssl": "ktgfast.train.ssl:SemiSupervisedTrainer",
    "self-distill": "ktgfast.train.self_distill:SelfDistillTrainer",
    "ban": "ktgfast.train.self_distill:BornAgainTrainer",
}


def trainer_class(method: str):
    if method not in TRAIN_METHODS:
        raise ValueError(f"unknown training method {method!r}; allowed: {', '.join(TRAIN_METHODS)}")
    module, name = TRAIN_METHODS[method].split(":")
    return getattr(importlib.import_module(module), name)
