"""Frozen teachers without weights are pretrained on the labels first, with the
run's own recipe, and cached by a content hash: a frozen node is never a random
model (docs/methods.md)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

from ..data.fingerprint import data_fingerprint
from ..data.recipes import default_model
from ..graph import get_preset
from .checkpoint import atomic_save
from .run import Trainer

RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "schedule",
               "milestones", "gamma", "augment", "pad", "pad_mode", "amp", "val_size")
PRETRAIN_SEED = 0  # a teacher is one fixed model per recipe, whatever the student's seed


def cache_dir(config) -> Path:
    root = config.pretrain_cache or os.environ.get("KTGFAST_CACHE") or Path.home() / ".cache" / "ktgfast"
    return Path(root) / "pretrained"


def pretrain_key(trainer, node) -> str:
    model = default_model(trainer.data) if node.model == "auto" else node.model
    data = trainer.data
    content = {
        "model": model, "options": node.options, "data": data.name,
        "train_size": len(data.train.labels), "train_data": data_fingerprint(data.train),
        "num_classes": data.num_classes,
        "channels": data.channels, "recipe": {k: getattr(trainer.config, k) for k in RECIPE_KEYS},
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def ensure_pretrained(trainer, node) -> str:
    """Path of label-only weights for ``node``: cached, or trained now."""
    key = pretrain_key(trainer, node)
    path = cache_dir(trainer.config) / f"{key}.pt"
    if path.exists():
        trainer._print(f"frozen node {node.name!r}: using cached label-only weights {path}")
        return str(path)
    trainer._print(f"frozen node {node.name!r} has no weights: pretraining {node.model} on the "
                   f"labels ({trainer.config.epochs} epochs, same recipe); cache {path}")
    graph = get_preset("vanilla", model=node.model)
    graph.nodes[0] = replace(graph.nodes[0], options=dict(node.options))
    # The teacher is judged on validation data only (never on test).  In a
    # semi-supervised run trainer.data.train is the labelled set already.
    cfg = replace(trainer.config.for_method("ktg"), out=str(path.with_suffix("")) + "-run",
                  tensorboard=False, seed=PRETRAIN_SEED, checkpoint=False,
                  eval_splits=["val"] if trainer.data.val is not None else [])
    # <key>-run is the cache's scratch folder: a retry after a crash there starts over.
    teacher = Trainer(graph, trainer.data, cfg, method="ktg", overwrite=True)
    teacher.fit()
    atomic_save(teacher.models[0].state_dict(), path)
    return str(path)


