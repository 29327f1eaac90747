"""Reading a finished training run back: its graph, recipe, dataset and the
trained models of its nodes (for distillation teachers and ``ktgfast analyze``).

A run folder holds ``graph.yaml``, ``config.yaml`` (``{config, data}``),
``checkpoint.pt`` (the last epoch) and ``metrics.csv``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from ..data.recipes import default_model
from ..graph import AUTO_MODEL, Graph, load_graph
from . import checkpoint as ckpt
from .config import TrainConfig

RUN_FILES = ("graph.yaml", "config.yaml", "checkpoint.pt")


@dataclass
class Run:
    path: Path
    graph: Graph
    config: TrainConfig
    data: object                 # the dataset (splits + metadata)
    models: dict[str, nn.Module]  # model nodes in graph order, eval mode, no grad
    epoch: int


def _check_run_dir(path: Path) -> None:
    if not path.is_dir():
        raise ValueError(f"run folder {str(path)!r} does not exist")
    missing = [f for f in RUN_FILES if not (path / f).exists()]
    if missing:
        raise ValueError(f"{str(path)!r} is not a finished ktgfast run: {', '.join(missing)} missing "
                         f"(a run folder holds {', '.join(RUN_FILES)})")


def load_run(path: str | Path, device: str | torch.device = "cpu", data=None,
             nodes: list[str] | None = None) -> Run:
    """The run in ``path`` with its model nodes (or the named ``nodes``) loaded
    from the last checkpoint.  ``data`` reuses an already loaded dataset."""
    from ..data import get_dataset
    from ..models import build_model

    path = Path(path)
    _check_run_dir(path)
    graph = load_graph(path / "graph.yaml")
    meta = yaml.safe_load((path / "config.yaml").read_text()) or {}
    config = TrainConfig.from_dict(meta.get("config", {}), where=str(path / "config.yaml"))
    if data is None:
        data = get_dataset(meta.get("data", "mnist5k"), root=config.data_root, download=False,
                           val_size=config.val_size, seed=0)
    model_nodes = [n.name for n in graph.nodes if not n.is_ensemble]
    wanted = list(nodes) if nodes else model_nodes
    for n in wanted:
        if n not in model_nodes:
            raise ValueError(f"run {str(path)!r} has no model node {n!r}; allowed: {', '.join(model_nodes)}")
    state = ckpt.load(path / "checkpoint.pt")
    names = graph.node_names()
    models = {}
    for name in wanted:
        node = graph.node(name)
        node = graph.node(node.ema_of) if node.ema_of else node  # an EMA node has its source's model
        arch = default_model(data) if node.model == AUTO_MODEL else node.model
        model = build_model(arch, data.num_classes, in_channels=data.channels, **node.options)
        model.load_state_dict(state["models"][names.index(name)])
        models[name] = model.to(device).eval().requires_grad_(False)
    return Run(path, graph, config, data, models, int(state.get("epoch", 0)))
