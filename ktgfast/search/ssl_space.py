"""Semi-supervised search spaces (the thesis, §5.2.3, figs. 5.4-5.5).

A space with ``semi_supervised: true`` numbers its nodes from 1 (node 1 is the
target and has the fixed ``target_model``) and searches, for every edge --
label edges, edges between nodes *and self-loops*:

* the gate, from ``gates`` (any of through, cutoff, linear, neg_linear,
  threshold; label edges skip threshold, which is Through there);
* for a non-cutoff node edge, its loss from ``edge_losses`` (kl: consistency,
  pl: pseudo-label, tpl: thresholded pseudo-label, cos);
* with ``ema: true``, the edge node 1 → node t (t ≥ 2) may also take the loss
  ``ema``: node t then becomes node 1's EMA (its model and options are node
  1's, its other incoming edges are not sampled).  This is the thesis's "EMA
  edge as a loss choice" restricted to edges out of the target, so no sample
  is an EMA of an EMA or an EMA target.

Every node edge gets the space's ``views`` (``{src: weak, dst: strong}`` by
default, FixMatch's perturbations; ``{src: weak, dst: weak2}`` for the diverse
space's two weak draws).  ``score``: ``target`` (node 1's validation accuracy)
or ``best`` (the better model node's, as the thesis scores its FixMatch space).
A node whose every incoming edge is cutoff and that is no EMA is pretrained on
the labelled set and frozen (the thesis, ch. 5).
"""
from __future__ import annotations

from ..edges import GATES, LABEL
from ..graph import Edge, Gate, Graph, Node
from ..graph.ssl import UNLABELED_LOSSES, VIEWS

# The gates a semi-supervised space may list (from the table of edge kinds).
SSL_GATES = tuple(name for name, g in GATES.items() if g.search_ssl)
SCORES = ("target", "best")
EMA = "ema"


def parse_ssl_keys(data: dict, where: str) -> dict:
    """The semi-supervised keys of a space file, checked."""
    losses = data.get("edge_losses", ["kl", "pl", "tpl"])
    if not isinstance(losses, list) or not losses or any(x not in UNLABELED_LOSSES for x in losses):
        raise ValueError(f"{where}.edge_losses: {losses!r}; expected a non-empty list of "
                         f"{', '.join(UNLABELED_LOSSES)}")
    ema = data.get("ema", False)
    if not isinstance(ema, bool):
        raise ValueError(f"{where}.ema: expected true or false, got {ema!r}")
    views = data.get("views", {"src": "weak", "dst": "strong"})
    if not isinstance(views, dict) or set(views) != {"src", "dst"} or any(
            v not in VIEWS for v in views.values()):
        raise ValueError(f"{where}.views: {views!r}; expected {{src: V, dst: V}} with V one of "
                         f"{', '.join(VIEWS)}")
    gates = data.get("gates", ["through", "cutoff", "linear", "neg_linear"])
    if not isinstance(gates, list) or not gates or any(g not in SSL_GATES for g in gates):
        raise ValueError(f"{where}.gates: {gates!r}; a semi-supervised space takes a list of "
                         f"{', '.join(SSL_GATES)}")
    return {"edge_losses": list(losses), "ema": ema, "views": dict(views), "gates": list(gates)}


def check_score(score, where: str) -> str:
    if score not in SCORES:
        raise ValueError(f"{where}.score: {score!r}; allowed: {', '.join(SCORES)}")
    return score


def label_gates(space) -> list[str]:
    """The space's gates for label edges: those that pass everything from the
    label (threshold: Through there) are left out."""
    return [g for g in space.gates if not GATES[g].label_passes] or ["through"]


def sample_ssl(space, trial, dataset: str) -> Graph:
    names = space.node_names()
    target = names[0]
    models = {target: space.target_for(dataset)}
    for n in names[1:]:
        models[n] = trial.suggest_categorical(f"model_{n}", space.aux_for(dataset))
    views = {"src_view": space.views["src"], "dst_view": space.views["dst"]}
    losses = list(space.edge_losses)
    ema_of: dict[str, str] = {}
    edges: list[Edge] = []

    def node_edge(s: str, t: str, choices: list[str]) -> str | None:
        gate = trial.suggest_categorical(f"gate_{s}_{t}", list(space.gates))
        if gate == "cutoff":
            edges.append(Edge(s, t, losses[0], Gate("cutoff"), **views))
            return None
        loss = trial.suggest_categorical(f"loss_{s}_{t}", choices)
        if loss != EMA:
            edges.append(Edge(s, t, loss, Gate(gate), **views))
        return loss

    for t in names:
        sources = list(names)
        if space.ema and t != target:
            sources.remove(target)
            if node_edge(target, t, losses + [EMA]) == EMA:
                ema_of[t] = target  # its weights follow node 1: no other incoming edge
                continue
        gate = trial.suggest_categorical(f"gate_{LABEL}_{t}", label_gates(space))
        edges.append(Edge(LABEL, t, "ce", Gate(gate)))
        for s in sources:
            node_edge(s, t, losses)
    nodes = [Node(n, models[target], ema_of=ema_of[n]) if n in ema_of else Node(n, models[n])
             for n in names]
    return Graph(nodes, edges, target, name=space.name, semi_supervised=True)


def ssl_size(space, dataset: str) -> float:
    """Distinct graphs (up to canonical equivalences such as tpl + through =
    pl + threshold): per destination, label gate x node-edge choices, times
    the auxiliary model, plus one EMA graph per EMA-capable node."""
    g = len(space.gates)
    per_edge = 1 + (g - 1) * len(space.edge_losses) if "cutoff" in space.gates else g * len(space.edge_losses)
    n = space.nodes
    trained = len(label_gates(space)) * per_edge ** n
    total = float(trained)
    for _ in range(n - 1):
        total *= len(space.aux_for(dataset)) * trained + (1 if space.ema else 0)
    return total
