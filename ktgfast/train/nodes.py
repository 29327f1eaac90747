"""The models of a graph's nodes, as the KTG and semi-supervised steps train
them: one model per node (an ensemble node is a parameterless stand-in), which
nodes learn, frozen teachers loaded or pretrained, one SGD optimizer per
learning node."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import checkpoint as ckpt
from .build import build_node_model, resolved_lr, sgd
from .pretrain import ensure_pretrained


class NodeModels:
    def __init__(self, run, graph):
        cfg = run.config
        self.names = graph.node_names()
        self.learning = [graph.learns(n) and not node.is_ensemble and node.ema_of is None
                         for n, node in zip(self.names, graph.nodes)]

        def arch(node):  # an EMA node has its source's architecture and options
            if node.ema_of is None:
                return node
            return dataclasses.replace(graph.node(node.ema_of), name=node.name)

        self.models = nn.ModuleList(build_node_model(arch(n), run.data, run.device, cfg.channels_last)
                                    for n in graph.nodes)
        self._load_frozen(run, graph)
        self.lr = resolved_lr(cfg, run.data)
        self.optimizers = [sgd(m, self.lr, cfg) for m, learns in zip(self.models, self.learning)
                           if learns]

    def _load_frozen(self, run, graph) -> None:
        for i, node in enumerate(graph.nodes):
            if self.learning[i] or node.is_ensemble or node.ema_of is not None:
                continue
            if node.weights:
                path = node.weights
            else:  # pretraining runs its own seeded trainer: keep our RNG streams
                rng = ckpt.rng_state()
                path = ensure_pretrained(run, node)
                ckpt.set_rng_state(rng)
            state = torch.load(path, map_location=run.device, weights_only=True)
            try:
                self.models[i].load_state_dict(state)
            except RuntimeError as exc:
                raise ValueError(f"weights {path!r} do not fit node {node.name!r} "
                                 f"({node.model}): {exc}") from None
            self.models[i].eval().requires_grad_(False)


__all__ = ["NodeModels"]
