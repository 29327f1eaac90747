"""Which logit rows ("slots") one training step produces, and which edges act
on them.

Slots ``0..M-1`` are the graph's nodes in order: a model node's logits, or an
ensemble node's mean of its members' logits (thesis eq. 4.10; sources are
detached by the op, so an ensemble only ever *gives* knowledge).  After them
come the attention-branch logits of every learning ABN node: ABN trains that
branch with its own cross-entropy, so each such slot receives a copy of the
node's label edges (same gate, same weight), and its loss counts as the node's.
"""
from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..edges import EdgeSpec


class EnsembleNode(nn.Module):
    """The parameterless stand-in of an ensemble node in ``Trainer.models``, so
    that model lists stay aligned with node names."""

    def forward(self, x):  # pragma: no cover - the trainer averages members instead
        raise RuntimeError("an ensemble node is computed from its members' logits")


def has_attention_branch(model: nn.Module) -> bool:
    """Models whose ``forward_outputs`` returns attention-branch logits (ABN)."""
    return bool(getattr(model, "has_aux_logits", False))


class Slots:
    def __init__(self, graph, models, learning):
        names = graph.node_names()
        self.ensembles = {i: [names.index(m) for m in graph.members(n)]
                          for i, n in enumerate(names) if graph.node(n).is_ensemble}
        self.maps = graph.has_attention_edges()
        model_nodes = [i for i in range(len(names)) if i not in self.ensembles]
        self.aux: list[int | None] = [None] * len(names)
        specs = graph.edge_specs()
        self.owner = list(range(len(names)))
        for i in model_nodes:
            if learning[i] and has_attention_branch(models[i]):
                self.aux[i] = len(self.owner)
                self.owner.append(i)
                specs += [replace(e, dst=self.aux[i]) for e in graph.edge_specs()
                          if e.from_label and e.dst == i]
        self.edge_specs: list[EdgeSpec] = specs
        self.count = len(self.owner)
        self.wants_outputs = [i in model_nodes and (self.maps or self.aux[i] is not None)
                              for i in range(len(names))]
        self.crop_sizes = tuple(graph.crop_sizes) if graph.crop_sizes else self._model_crops(
            graph, models)

    def _model_crops(self, graph, models) -> tuple[int, ...]:
        if not self.maps:
            return ()
        crops = {tuple(getattr(models[i], "crop_sizes", (3, 5, 7)))
                 for i in range(len(models)) if self.wants_outputs[i]}
        if len(crops) > 1:
            raise ValueError(f"attention edges join models with different default crop sizes "
                             f"{sorted(crops)}; set graph.crop_sizes")
        return crops.pop()
