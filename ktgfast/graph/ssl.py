"""Semi-supervised graphs (the thesis, ch. 5): views, the thresholded
pseudo-label loss, EMA nodes, and the checks a graph marked
``semi_supervised: true`` must pass.

In a semi-supervised graph every edge from the label acts on the *labelled*
batch (weak view), every other edge -- self-loops included -- on the
*unlabelled* batch, between a (node, view) pair at each end:

* ``dst_view`` (default ``strong``): what the destination sees, ζ1 of eq. 5.1;
* ``src_view`` (default ``weak``): what the source sees, ζ2.

Views are ``weak`` (flip + crop), ``weak2`` (a second, independent flip + crop
draw) and ``strong`` (its own flip + crop draw, then RandAugment); every view
is a separate draw, so two different names are two different images.  The
defaults are FixMatch's (target strong, source weak); the thesis's "diverse"
space uses ``dst_view: weak2, src_view: weak`` (both weak, two draws).

Losses on unlabelled edges: ``kl`` (consistency, eq. 5.1), ``pl`` (pseudo-label,
eqs. 5.3-5.4), ``tpl`` (thresholded pseudo-label, eq. 5.5: ``pl`` times
``1[max p_src(ζ2) > 0.95]``), ``cos``.  ``tpl`` keeps its threshold under any
gate, so ``tpl`` with a Linear gate is eq. 5.5 times ``k/k_end``.

An EMA node (``ema_of: <node>``) holds ``θ ← α θ + (1 − α) θ_src`` of a trained
model node after every optimizer step (eq. 5.2); it is never back-propagated,
so it takes no (non-cutoff) incoming edge, but it may be any edge's source
and the target.
"""
from __future__ import annotations

from ..edges import GATES, LABEL
from .errors import GraphError

VIEWS = ("weak", "weak2", "strong")
DEFAULT_SRC_VIEW = "weak"     # ζ2: the source sees the weak view (FixMatch, Sohn et al. 2020)
DEFAULT_DST_VIEW = "strong"   # ζ1: the target sees the strong view
TPL = "tpl"                   # thresholded pseudo-label (eq. 5.5)
TPL_TAU = 0.95                # its threshold τ (FixMatch's; the thesis, eq. 5.5)
UNLABELED_LOSSES = ("kl", "cos", "pl", TPL)
# Gates an unlabelled edge may have (not those that compare with the label).
UNLABELED_GATES = tuple(name for name, g in GATES.items() if not g.needs_labels)
# Gates a tpl edge may have: cutoff, its own threshold, and those that depend
# on progress only (they become its coefficient schedule).
TPL_GATES = tuple(name for name, g in GATES.items()
                  if g.skip or g.schedule is not None or name == "threshold")


def src_view(edge) -> str:
    return edge.src_view or DEFAULT_SRC_VIEW


def dst_view(edge) -> str:
    return edge.dst_view or DEFAULT_DST_VIEW


def lower_edge(edge) -> tuple[str, str, float, str]:
    """``(loss, gate, tau, modulation)`` of an unlabelled edge for the fused op.

    The op has one gate per edge; a ``tpl`` edge takes the op's ``threshold``
    gate (τ = 0.95) and its own gate becomes a per-step factor on the edge's
    coefficient: ``modulation`` is the name of the coefficient schedule
    (``ktgfast.edges.kinds.SCHEDULES``) with the gate's weight -- ``none``,
    ``linear`` (k/k_end) or ``neg_linear`` -- to pass as the edge's
    ``coef_schedule``.  A ``tpl`` edge with a threshold gate τ' is one
    threshold at max(τ, τ')."""
    gate, loss = edge.gate, edge.loss
    if loss != TPL:
        return loss, gate.kind, gate.tau, "none"
    if gate.kind == "threshold":
        return "pl", "threshold", max(TPL_TAU, gate.tau), "none"
    schedule = GATES[gate.kind].schedule if gate.kind in GATES else None
    if schedule is not None:  # through, linear, neg_linear
        return "pl", "threshold", TPL_TAU, schedule
    return "pl", gate.kind, gate.tau, "none"  # cutoff (dropped) or sine (rejected by validate)


def ssl_features(graph) -> list[str]:
    """What in ``graph`` only a semi-supervised graph may have (field paths)."""
    found = []
    for i, n in enumerate(graph.nodes):
        if n.ema_of is not None:
            found.append(f"graph.nodes[{i}].ema_of")
    for i, e in enumerate(graph.edges):
        if e.src == e.dst:
            found.append(f"graph.edges[{i}] (self-loop)")
        if e.loss == TPL:
            found.append(f"graph.edges[{i}].loss tpl")
        for k in ("src_view", "dst_view"):
            if getattr(e, k) is not None:
                found.append(f"graph.edges[{i}].{k}")
    return found


def check_semi_supervised(graph) -> None:
    """The rules of semi-supervised graphs; raises GraphError."""
    if not graph.semi_supervised:
        found = ssl_features(graph)
        if found:
            raise GraphError(f"{found[0]}: self-loops, EMA nodes, views and the tpl loss belong to "
                             "semi-supervised graphs; set semi_supervised: true")
        return
    for i, n in enumerate(graph.nodes):
        w = f"graph.nodes[{i}]"
        if n.is_ensemble:
            raise GraphError(f"{w}: ensemble nodes are not supported in semi-supervised graphs")
        if n.ema_of is not None:
            _check_ema_node(graph, i)
    for i, e in enumerate(graph.edges):
        w = f"graph.edges[{i}]"
        for k in ("src_view", "dst_view"):
            v = getattr(e, k)
            if v is not None and v not in VIEWS:
                raise GraphError(f"{w}.{k}: unknown view {v!r}; allowed: {', '.join(VIEWS)}")
        if e.gate.kind != "cutoff" and graph.node(e.dst).ema_of is not None:
            raise GraphError(f"{w}: {e.dst!r} is an EMA node (an average of "
                             f"{graph.node(e.dst).ema_of!r}'s weights), never back-propagated; "
                             "remove the edge or use gate cutoff")
        if e.src == LABEL:
            if e.src_view is not None or e.dst_view is not None:
                raise GraphError(f"{w}: a label edge acts on the labelled batch (weak view); "
                                 "drop src_view / dst_view")
            continue
        if e.gate.kind == "cutoff":
            continue
        if e.parts()[1] is not None:
            raise GraphError(f"{w}.loss: attention losses are not supported in semi-supervised "
                             f"graphs; allowed: {', '.join(UNLABELED_LOSSES)}")
        if e.gate.kind not in UNLABELED_GATES:
            raise GraphError(f"{w}.gate: the {e.gate.kind} gate needs labels, which unlabelled edges "
                             f"do not have; allowed: {', '.join(UNLABELED_GATES)}")
        if e.loss == TPL and e.gate.kind not in TPL_GATES:
            raise GraphError(f"{w}.gate: tpl takes {', '.join(TPL_GATES[:-1])} or {TPL_GATES[-1]}; "
                             f"for a {e.gate.kind}-gated pseudo-label use pl")
        if e.loss == "kl" and src_view(e) == dst_view(e) and _same_weights(graph, e.src, e.dst):
            what = "a self-loop" if e.src == e.dst else f"{e.src!r} and its EMA partner {e.dst!r}"
            raise GraphError(
                f"{w}: consistency between {what} on the same view {src_view(e)!r} compares a "
                "model with itself (a zero loss); give src_view and dst_view "
                f"different views ({', '.join(VIEWS)})")


def _same_weights(graph, a: str, b: str) -> bool:
    """The same node, or a node and its EMA (almost the same weights)."""
    return a == b or graph.node(a).ema_of == b or graph.node(b).ema_of == a


def _check_ema_node(graph, i: int) -> None:
    n, w = graph.nodes[i], f"graph.nodes[{i}]"
    names = graph.node_names()
    if n.ema_of not in names:
        raise GraphError(f"{w}.ema_of: {n.ema_of!r} is not a node; allowed: "
                         f"{', '.join(m for m in names if m != n.name)}")
    if n.ema_of == n.name:
        raise GraphError(f"{w}.ema_of: a node cannot be the EMA of itself")
    src = graph.node(n.ema_of)
    if src.is_ensemble or src.ema_of is not None or src.frozen:
        kind = "an ensemble" if src.is_ensemble else "an EMA node" if src.ema_of else "frozen"
        raise GraphError(f"{w}.ema_of: {src.name!r} is {kind}; an EMA node averages a trained "
                         "model node")
    if n.frozen or n.weights:
        raise GraphError(f"{w}: an EMA node's weights come from {src.name!r}; drop frozen/weights")
    if n.model not in ("auto", src.model):
        raise GraphError(f"{w}.model: {n.model!r}; an EMA node has its source's model "
                         f"({src.model!r}): use that or auto")
    if n.options and n.options != src.options:
        raise GraphError(f"{w}.options: an EMA node has its source's options ({src.options}); "
                         "leave options empty")
