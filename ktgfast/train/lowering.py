"""The one lowering of a graph for training: which logit rows ("slots") a step
produces, which edges act on them, and which node owns each slot's loss.

Supervised graphs (:class:`Slots`).  Slots ``0..M-1`` are the graph's nodes in
order: a model node's logits, or an ensemble node's mean of its members'
logits (the thesis, eq. 4.10; sources are detached by the op, so an ensemble
only ever *gives* knowledge).  After them come the attention-branch logits of
every learning ABN node: ABN (Fukui et al. 2019) trains that branch with its
own cross-entropy, so each such slot receives a copy of the node's label
edges (same gate, same weight), and its loss counts as the node's.

Semi-supervised graphs (:class:`SSLSlots`).  Labelled call: one slot per node
with an active label edge, in node order.  Unlabelled call: one slot per
(node, view) some active unlabelled edge names, ordered by node and then view;
each edge is lowered for the op (``graph.ssl.lower_edge``); a tpl edge under a
Linear gate carries that gate as its coefficient schedule, which the op
wrapper evaluates on the device (``ktgfast.edges``).

Ramp-ups (``Graph.rampup`` or an edge's ``rampup``; docs/rampup.md) become the
non-label edges' coefficient schedules (``ramp_linear`` / ``ramp_sigmoid``) in
both layouts; a tpl edge whose gate already is its schedule cannot be ramped
(validation refuses it).
"""
from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..edges import LABEL, EdgeSpec
from ..graph import Graph
from ..graph.ssl import VIEWS, dst_view, lower_edge, src_view


class EnsembleNode(nn.Module):
    """The parameterless stand-in of an ensemble node in a run's model list,
    so that model lists stay aligned with node names."""

    def forward(self, x):  # pragma: no cover - the step averages members instead
        raise RuntimeError("an ensemble node is computed from its members' logits")


def has_attention_branch(model: nn.Module) -> bool:
    """Models whose ``forward_outputs`` returns attention-branch logits (ABN)."""
    return bool(getattr(model, "has_aux_logits", False))


class Slots:
    """Slot layout of a supervised graph (see the module docstring)."""

    def __init__(self, graph: Graph, models, learning):
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
        self.attention_specs: list[EdgeSpec] = graph.attention_specs() if self.maps else []
        self.count = len(self.owner)
        self.wants_outputs = [i in model_nodes and (self.maps or self.aux[i] is not None)
                              for i in range(len(names))]
        self.crop_sizes = tuple(graph.crop_sizes) if graph.crop_sizes else self._model_crops(models)

    def _model_crops(self, models) -> tuple[int, ...]:
        if not self.maps:
            return ()
        crops = {tuple(getattr(models[i], "crop_sizes", (3, 5, 7)))
                 for i in range(len(models)) if self.wants_outputs[i]}
        if len(crops) > 1:
            raise ValueError(f"attention edges join models with different default crop sizes "
                             f"{sorted(crops)}; set graph.crop_sizes")
        return crops.pop()


class SSLSlots:
    """The two slot layouts of a semi-supervised step (see the module docstring)."""

    maps = False
    crop_sizes = ()

    def __init__(self, graph: Graph):
        names = graph.node_names()
        idx = {n: i for i, n in enumerate(names)}
        m = len(names)
        self.ensembles: dict = {}
        self.aux = [None] * m
        self.wants_outputs = [False] * m
        active = graph.active_edges()
        label_edges = [e.canonical() for e in active if e.src == LABEL]
        self.u_edges = [e for e in active if e.src != LABEL]
        self.labeled_nodes = sorted({idx[e.dst] for e in label_edges})
        slot = {n: k for k, n in enumerate(self.labeled_nodes)}
        self.edge_specs = [_spec(LABEL, slot[idx[e.dst]], e, e.loss, e.gate.kind, e.gate.tau, "none")
                           for e in label_edges]
        # An edge table needs >= 1 slot: a graph without label edges gets an idle one
        self.count = max(1, len(self.labeled_nodes))
        self.owner = self.labeled_nodes or [0]

        ends = {(idx[e.src], src_view(e)) for e in self.u_edges}
        ends |= {(idx[e.dst], dst_view(e)) for e in self.u_edges}
        self.u_slots = sorted(ends, key=lambda p: (p[0], VIEWS.index(p[1])))
        uslot = {p: k for k, p in enumerate(self.u_slots)}
        self.u_specs = []
        for e in self.u_edges:
            loss, gate, tau, schedule = lower_edge(e)
            ramp = graph.coef_schedule_of(e)
            if ramp is not None:
                if schedule != "none":  # refused by graph.validate
                    raise ValueError(f"edge {e.src} -> {e.dst}: a tpl edge under a {e.gate.kind} gate "
                                     "cannot also be ramped (one coefficient schedule per edge)")
                schedule = ramp
            self.u_specs.append(_spec(uslot[(idx[e.src], src_view(e))],
                                      uslot[(idx[e.dst], dst_view(e))], e, loss, gate, tau, schedule))
        self.u_owner = [n for n, _ in self.u_slots]
        self.node_views = [[v for n, v in self.u_slots if n == i] for i in range(m)]
        self.views = [v for v in VIEWS if any(v == w for _, w in self.u_slots)]


def _spec(src, dst, e, loss, gate, tau, schedule) -> EdgeSpec:
    return EdgeSpec(src=src, dst=dst, loss=loss, gate=gate, T=e.T, weight=e.weight, t2=e.t2,
                    f=e.gate.f, phi=e.gate.phi, tau=tau, coef_schedule=schedule)


__all__ = ["EnsembleNode", "SSLSlots", "Slots", "has_attention_branch"]
