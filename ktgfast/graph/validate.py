"""Graph validation: every error names the field path and what is allowed,
and all of it runs before any model is built."""
from __future__ import annotations

import math

from ..edges import ATTENTION_LOSS_KINDS, LABEL, LABEL_LOSSES, LOSS_KINDS, PULL_NORMS, REDUCTIONS
from ..models import list_models
from .errors import GraphError
from .spec import AUTO_MODEL, ENSEMBLE_MODEL, LOSS_DESIGNS, NO_RAMP, RAMP_KINDS, Graph, Rampup
from .ssl import TPL, check_semi_supervised, lower_edge

__all__ = ["GraphError", "PULL_NORMS", "validate"]


def _model_known(name: str, known_models) -> bool:
    if callable(known_models):  # a lookup such as ktgfast.models.model_options
        try:
            known_models(name)
            return True
        except ValueError:
            return False
    return name in known_models


def _check_loss(graph: Graph, e, w: str) -> None:
    allowed = f"{', '.join(LOSS_KINDS)}, {', '.join(ATTENTION_LOSS_KINDS)}, a probability and an " \
              f"attention loss joined by '&' (kl&pull), or a design {', '.join(LOSS_DESIGNS)}" \
              + (f", or {TPL} (thresholded pseudo-label)" if graph.semi_supervised else "")
    parts = LOSS_DESIGNS.get(e.loss, e.loss).split("&") if isinstance(e.loss, str) else [None]
    prob = [p for p in parts if p in LOSS_KINDS or (p == TPL and graph.semi_supervised)]
    att = [p for p in parts if p in ATTENTION_LOSS_KINDS]
    if len(prob) + len(att) != len(parts) or len(prob) > 1 or len(att) > 1:
        raise GraphError(f"{w}.loss: unknown loss {e.loss!r}; allowed: {allowed}")
    if e.src == LABEL:
        if att or prob[0] not in LABEL_LOSSES:
            raise GraphError(f"{w}.loss: {e.loss!r} cannot come from the label; allowed: "
                             f"{', '.join(LABEL_LOSSES)}")
        return
    if prob and prob[0] == "ce":
        raise GraphError(f"{w}.loss: 'ce' is the label edge's loss; from a node use kl, cos or pl")
    if att and graph.node(e.src).is_ensemble:
        raise GraphError(f"{w}.loss: {e.loss!r} needs an attention map but {e.src!r} is an ensemble "
                         "node; from an ensemble use kl, cos or pl")


def _check_ensemble(graph: Graph, i: int) -> None:
    n, w = graph.nodes[i], f"graph.nodes[{i}]"
    for k in n.options:
        if k != "members":
            raise GraphError(f"{w}.options: unknown option {k!r} of an ensemble node; allowed: members")
    if n.frozen or n.weights:
        raise GraphError(f"{w}: an ensemble node has no weights of its own; drop frozen/weights")
    members = graph.members(n.name)
    models = [m.name for m in graph.nodes if not m.is_ensemble]
    if not members:
        raise GraphError(f"{w}.options.members: an ensemble needs at least one model node")
    for m in members:
        if m not in models:
            raise GraphError(f"{w}.options.members: {m!r} is not a model node; allowed: {', '.join(models)}")


def _check_rampup(r, w: str) -> None:
    if not isinstance(r, Rampup):
        raise GraphError(f"{w}: {r!r}; allowed: none or {{kind: {'|'.join(RAMP_KINDS)}, "
                         "length: a number in (0, 1]}")
    problems = r.problems(w)
    if problems:
        raise GraphError(problems[0])


def _check_edge_rampup(graph: Graph, e, w: str) -> None:
    if e.rampup is not None and e.rampup != NO_RAMP:
        _check_rampup(e.rampup, f"{w}.rampup")
        if e.src == LABEL:
            raise GraphError(f"{w}.rampup: label edges are never ramped; allowed: none (or leave it out)")
    ramp = graph.ramp_of(e)
    if ramp is not None and graph.semi_supervised and e.gate.kind != "cutoff" and e.loss == TPL \
            and lower_edge(e)[3] != "none":
        # the op's edge holds one coefficient schedule: the tpl edge's gate takes it
        raise GraphError(f"{w}.rampup: a tpl edge under a {e.gate.kind} gate already scales its "
                         f"weight by the gate; set rampup: none on this edge, or use gate through")


def _check_ranks(graph: Graph) -> None:
    """The node -> rank map of ``--placement spread`` (docs/node_parallel.md):
    every model node gives an integer >= 0, or none does; the upper bound (the
    launch's WORLD_SIZE) is checked when a spread run starts."""
    given = [i for i, n in enumerate(graph.nodes) if n.rank is not None]
    if not given:
        return
    for i in given:
        n, w = graph.nodes[i], f"graph.nodes[{i}].rank"
        if n.is_ensemble:
            raise GraphError(f"{w}: {n.rank!r} on ensemble node {n.name!r}; an ensemble is computed on "
                             "every rank from its members' logits, drop its rank")
        if isinstance(n.rank, bool) or not isinstance(n.rank, int) or n.rank < 0:
            raise GraphError(f"{w}: {n.rank!r} for node {n.name!r}; allowed: an integer >= 0 (the rank "
                             "that trains the node under --placement spread)")
    for i, n in enumerate(graph.nodes):
        if n.rank is None and not n.is_ensemble:
            raise GraphError(f"graph.nodes[{i}].rank: missing for node {n.name!r} while other nodes "
                             "give one; give every model node a rank, or none (round-robin)")


def validate(graph: Graph, known_models=None) -> Graph:
    """Check a graph (see :func:`_validate`); the errors of a graph read from a
    file name that file (``dml.yaml.nodes[0].model: ...``, as the loader's)."""
    try:
        return _validate(graph, known_models)
    except GraphError as exc:
        source = getattr(graph, "source", None)
        text = str(exc)
        if source and text.startswith("graph"):
            raise GraphError(source + text[len("graph"):]) from None
        raise


def _validate(graph: Graph, known_models=None) -> Graph:
    """Check a graph; returns it unchanged or raises :class:`GraphError`.

    ``known_models``: a list of names, or a lookup that raises ValueError for
    an unknown name (``ktgfast.models.model_options`` accepts templates such
    as ``wrn16_1``)."""
    if not graph.nodes:
        raise GraphError("graph.nodes: a graph needs at least one model node")
    names = graph.node_names()
    for i, n in enumerate(graph.nodes):
        w = f"graph.nodes[{i}]"
        if not isinstance(n.name, str) or not n.name or n.name == LABEL:
            raise GraphError(f"{w}.name: {n.name!r} is not a valid node name (non-empty, not 'label')")
        if names.count(n.name) > 1:
            raise GraphError(f"{w}.name: duplicate node name {n.name!r}")
        if n.is_ensemble:
            _check_ensemble(graph, i)
            continue
        if known_models is not None and n.model != AUTO_MODEL and not _model_known(n.model, known_models):
            names = known_models if isinstance(known_models, list) else list_models()
            raise GraphError(
                f"{w}.model: unknown model {n.model!r}; allowed: {AUTO_MODEL}, {ENSEMBLE_MODEL}, "
                f"{', '.join(names)}"
            )
        if not isinstance(n.options, dict):
            raise GraphError(f"{w}.options: expected a mapping, got {n.options!r}")
    _check_ranks(graph)
    if graph.attention_pull not in PULL_NORMS:
        raise GraphError(f"graph.attention_pull: {graph.attention_pull!r}; allowed: {', '.join(PULL_NORMS)}")
    if graph.crop_sizes is not None and (not graph.crop_sizes or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in graph.crop_sizes)):
        raise GraphError(f"graph.crop_sizes: {graph.crop_sizes!r}; expected a non-empty list of positive ints")
    if graph.reduction not in REDUCTIONS:
        raise GraphError(f"graph.reduction: {graph.reduction!r}; allowed: {', '.join(REDUCTIONS)}")
    if graph.rampup is not None and graph.rampup != NO_RAMP:
        _check_rampup(graph.rampup, "graph.rampup")
    sources = [LABEL, *names]
    for i, e in enumerate(graph.edges):
        w = f"graph.edges[{i}]"
        if e.src not in sources:
            raise GraphError(f"{w}.src: {e.src!r} is not a node; allowed: {', '.join(sources)}")
        if e.dst not in names:
            raise GraphError(f"{w}.dst: {e.dst!r} is not a node; allowed: {', '.join(names)}")
        if e.src == e.dst and not graph.semi_supervised:
            raise GraphError(f"{w}: self-loop {e.src!r} -> {e.dst!r}; only semi-supervised graphs "
                             "have self-loops (a node on two views); set semi_supervised: true")
        _check_loss(graph, e, w)
        problems = e.gate.problems(f"{w}.gate")  # kind and parameters against the table
        if problems:
            raise GraphError(problems[0].line())
        if not (math.isfinite(e.T) and e.T > 0):
            raise GraphError(f"{w}.T: {e.T!r}; the temperature must be a finite number > 0")
        if not math.isfinite(e.weight):
            raise GraphError(f"{w}.weight: {e.weight!r} must be finite")
        if graph.node(e.dst).is_ensemble:
            raise GraphError(f"{w}.dst: {e.dst!r} is an ensemble node (the mean of its members); "
                             "it takes no edges, train its members instead")
        if graph.node(e.dst).frozen and e.gate.kind != "cutoff":
            raise GraphError(
                f"{w}: edge into frozen node {e.dst!r} would never train it; remove it or use gate cutoff"
            )
        _check_edge_rampup(graph, e, w)
    check_semi_supervised(graph)
    target = graph.target_name
    if target not in names:
        raise GraphError(f"graph.target: {target!r} is not a node; allowed: {', '.join(names)}")
    if not graph.learns(target):
        raise GraphError(
            f"graph.target: target node {target!r} never learns (frozen, or every incoming edge is "
            "cutoff, or an ensemble of such nodes); its accuracy would be that of a fixed model"
        )
    return graph
