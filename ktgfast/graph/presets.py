"""Named graphs: the collaborative-learning methods the thesis (ch. 3-4) compares
as graphs: vanilla, KD (Hinton et al. 2015), DML (Zhang et al. 2018), BAN
(Furlanello et al. 2018), TA (Mirzadeh et al. 2020), the graphs it found, ensembles.

Every preset is a function of keyword parameters returning a :class:`Graph`;
``get_preset("dml", k=3)`` builds one, ``list_presets()`` names them all.
Models default to ``"auto"`` (the dataset's default model) so that a preset
runs on any dataset; pass model names to reproduce a paper's setting.

Presets whose peers learn from each other from step 0 (dml, ens-dml,
ens-push-pull-3node) ramp their non-label edges up linearly over the first
20 % of training by default (``rampup="none"`` turns it off): two untrained
peers otherwise chase each other's class prior in their first steps
(docs/rampup.md).  The graphs the thesis found keep their gates and no ramp.
"""
from __future__ import annotations

import inspect
import typing
import re
from typing import Callable

from ..edges import LABEL
from .spec import AUTO_MODEL, ENSEMBLE_MODEL, NO_RAMP, RAMP_KINDS, Edge, Gate, Graph, Node, Rampup

PRESETS: dict[str, Callable[..., Graph]] = {}


def register_preset(name: str):
    def wrap(fn):
        PRESETS[name] = fn
        return fn

    return wrap


def list_presets() -> list[str]:
    return sorted(PRESETS)


def describe_preset(name: str) -> tuple[str, list[str]]:
    """``(one-line description, parameter names)`` of a preset, from its
    docstring's first sentence and its signature."""
    fn = PRESETS[name]
    para = " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())
    sentence = re.split(r"\.\s+(?=[A-Z])", para)[0].rstrip(".").replace("``", "")
    if len(sentence) > 100:
        sentence = sentence[:99].rsplit(" ", 1)[0] + " …"
    return sentence, list(inspect.signature(fn).parameters)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a name", bool: "true or false"}


def _is_a(value, tp) -> bool:
    """``value`` fits the annotation ``tp`` (int, float, str, bool, list[X], X | None)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list:
        return isinstance(value, list) and all(_is_a(v, args[0]) for v in value)
    if args:  # a union
        return any(_is_a(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if tp is float else tp)


def _type_text(tp) -> str | None:
    if tp is None:
        return None
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list:
        plural = {int: "integers", float: "numbers", str: "names"}.get(args[0], "values")
        return f"a list of {plural}, e.g. [a,b]"
    if args:
        words = [_type_text(a) for a in args if a is not type(None)]
        if any(w is None for w in words):
            return None
        return " or ".join(words) + (" or none" if type(None) in args else "")
    return _TYPE_WORDS.get(tp)


def get_preset(name: str, **params) -> Graph:
    if name not in PRESETS:
        raise ValueError(f"unknown graph preset {name!r}; allowed: {', '.join(list_presets())}")
    fn = PRESETS[name]
    allowed = list(inspect.signature(fn).parameters)
    hints = typing.get_type_hints(fn)
    for k, v in params.items():
        if k not in allowed:
            raise ValueError(f"preset {name!r} has no parameter {k!r}; allowed: {', '.join(allowed)}")
        want = _type_text(hints.get(k))
        if want is not None and not _is_a(v, hints[k]):
            raise ValueError(f"preset {name!r}: {k} = {v!r}; allowed: {want}")
    graph = fn(**params)
    graph.name = graph.name or name
    return graph


PEER_RAMP = "linear"       # the default ramp-up of the peer-learning presets
PEER_RAMP_LENGTH = 0.2     # fraction of training (one epoch of a 5-epoch run)


def preset_rampup(kind: str | None, length: float, preset: str) -> Rampup | None:
    """The graph-wide ramp-up of a preset's ``rampup`` / ``rampup_length``
    parameters (``none`` or None: no ramp)."""
    if kind is None or kind == NO_RAMP:
        return None
    if kind not in RAMP_KINDS:
        raise ValueError(f"{preset}: rampup = {kind!r}; allowed: none, {', '.join(RAMP_KINDS)}")
    r = Rampup(kind, length)
    problems = r.problems(f"{preset}: rampup")
    if problems:
        raise ValueError(problems[0].replace(".length:", "_length ="))
    return Rampup(kind, float(length))


def _label(dst: str, weight: float = 1.0) -> Edge:
    return Edge(LABEL, dst, "ce", weight=weight)


@register_preset("vanilla")
def vanilla(model: str = AUTO_MODEL) -> Graph:
    """One model trained on the labels only."""
    return Graph([Node("student", model)], [_label("student")], "student")


@register_preset("kd")
def kd(student: str = AUTO_MODEL, teacher: str = AUTO_MODEL, T: float = 4.0, alpha: float = 0.9,
       teacher_weights: str | None = None) -> Graph:
    """Hinton KD: ``(1-α)·CE + α·T²·KL(p_teacher^T ‖ p_student^T)``, frozen teacher."""
    nodes = [Node("student", student), Node("teacher", teacher, frozen=True, weights=teacher_weights)]
    edges = [_label("student", 1 - alpha), Edge("teacher", "student", "kl", T=T, weight=alpha)]
    return Graph(nodes, edges, "student")


@register_preset("dml")
def dml(k: int = 2, model: str = AUTO_MODEL, models: list[str] | None = None,
        peer: str = "mean", rampup: str | None = PEER_RAMP,
        rampup_length: float = PEER_RAMP_LENGTH) -> Graph:
    """Deep Mutual Learning with ``k`` peers, all edges Through.

    ``peer="mean"`` weights each peer KL by 1/(k-1) as in the DML paper;
    ``peer="sum"`` sums the edges as the KTG thesis does.  ``rampup`` (linear,
    sigmoid or none) over the first ``rampup_length`` of training on the peer
    edges (docs/rampup.md).
    """
    if k < 1:
        raise ValueError(f"dml: k = {k}; at least one node is needed")
    if peer not in ("mean", "sum"):
        raise ValueError(f"dml: peer = {peer!r}; allowed: mean, sum")
    models = list(models) if models else [model] * k
    if len(models) != k:
        raise ValueError(f"dml: {len(models)} models given for k = {k} nodes")
    names = [f"node{i}" for i in range(k)]
    w = 1.0 / (k - 1) if peer == "mean" and k > 1 else 1.0
    edges = [_label(n) for n in names]
    edges += [Edge(s, t, "kl", weight=w) for t in names for s in names if s != t]
    return Graph([Node(n, m) for n, m in zip(names, models)], edges, names[0],
                 rampup=preset_rampup(rampup, rampup_length, "dml"))


@register_preset("ban")
def ban(model: str = AUTO_MODEL, teacher_weights: str | None = None, T: float = 1.0) -> Graph:
    """One Born-Again generation: a student of the same architecture learns from
    labels and from the frozen previous generation."""
    nodes = [Node("student", model), Node("teacher", model, frozen=True, weights=teacher_weights)]
    return Graph(nodes, [_label("student"), Edge("teacher", "student", "kl", T=T)], "student")


@register_preset("ta")
def ta(teacher: str = AUTO_MODEL, assistant: str = AUTO_MODEL, student: str = AUTO_MODEL,
       T: float = 4.0, alpha: float = 0.9, teacher_weights: str | None = None) -> Graph:
    """Teacher Assistant: frozen teacher → assistant → student, each a KD edge."""
    nodes = [Node("student", student), Node("assistant", assistant),
             Node("teacher", teacher, frozen=True, weights=teacher_weights)]
    edges = [
        _label("assistant", 1 - alpha), Edge("teacher", "assistant", "kl", T=T, weight=alpha),
        _label("student", 1 - alpha), Edge("assistant", "student", "kl", T=T, weight=alpha),
    ]
    return Graph(nodes, edges, "student")


@register_preset("ktg-found-2node")
def ktg_found_2node(target: str = "resnet32", auxiliary: str = "wrn28_2") -> Graph:
    """The 2-node graph found by the thesis's search with four gates (ch. 3):
    ResNet32 ↔ WRN28-2, Correct gate on ResNet32 → WRN28-2, Through elsewhere."""
    nodes = [Node("r32", target), Node("wrn", auxiliary)]
    edges = [_label("r32"), _label("wrn"), Edge("wrn", "r32", "kl"),
             Edge("r32", "wrn", "kl", gate=Gate("correct"))]
    return Graph(nodes, edges, "r32")


# ---- Ensemble KTG (the thesis, ch. 4): model nodes of one architecture + an ensemble node

def _ensemble_graph(names: list[str], model: str, edges: list[Edge], rampup: Rampup | None = None) -> Graph:
    nodes = [Node(n, model) for n in names] + [Node("ensemble", ENSEMBLE_MODEL)]
    return Graph(nodes, [_label(n) for n in names] + edges, "ensemble", rampup=rampup)


@register_preset("ens-independent")
def ens_independent(k: int = 2, model: str = AUTO_MODEL) -> Graph:
    """``k`` models trained independently on the labels; the target is their
    ensemble (mean logits), the thesis's "independent" baseline.  No ramp-up:
    it has no edge between nodes."""
    if k < 1:
        raise ValueError(f"ens-independent: k = {k}; at least one model node is needed")
    return _ensemble_graph([f"node{i}" for i in range(1, k + 1)], model, [])


@register_preset("ens-dml")
def ens_dml(k: int = 2, model: str = AUTO_MODEL, peer: str = "mean", rampup: str | None = PEER_RAMP,
            rampup_length: float = PEER_RAMP_LENGTH) -> Graph:
    """DML among ``k`` models (Prob(+) Through on every edge; ``peer`` and
    ``rampup`` as in ``dml``), scored by their ensemble."""
    if k < 2:
        raise ValueError(f"ens-dml: k = {k}; mutual learning needs at least two model nodes")
    if peer not in ("mean", "sum"):
        raise ValueError(f"ens-dml: peer = {peer!r}; allowed: mean, sum")
    names = [f"node{i}" for i in range(1, k + 1)]
    w = 1.0 / (k - 1) if peer == "mean" else 1.0
    return _ensemble_graph(names, model, [Edge(s, t, "kl", weight=w) for t in names for s in names if s != t],
                           preset_rampup(rampup, rampup_length, "ens-dml"))


@register_preset("ens-ktg-found-3node")
def ens_ktg_found_3node(model: str = AUTO_MODEL) -> Graph:
    """The 3-node ensemble graph found on Stanford Dogs (thesis fig. 4.8b) as
    its text (§4.4.2) describes it: KD from node 1 to node 3 and a Teacher
    Assistant chain node 1 → node 2 → node 3, pulling knowledge only (graphs
    of few nodes selected pull designs only).  The figure itself is not
    machine-readable in our copy, so the designs and gates per edge are ours:
    Prob(+)&Att(+) Through on the chain, Prob(+) Correct on the KD edge."""
    names = ["node1", "node2", "node3"]
    return _ensemble_graph(names, model, [
        Edge("node1", "node2", "kl&pull"),
        Edge("node2", "node3", "kl&pull"),
        Edge("node1", "node3", "kl", gate=Gate("correct")),
    ])


@register_preset("ens-push-pull-3node")
def ens_push_pull_3node(model: str = AUTO_MODEL, rampup: str | None = PEER_RAMP,
                        rampup_length: float = PEER_RAMP_LENGTH) -> Graph:
    """A diversity-seeking 3-node ensemble: node 1 pulls the others' distributions
    while nodes 2 and 3 push each other's distributions and attention maps apart
    (Prob(-)&Att(-), Linear gates), the mix of pull and push designs the thesis
    found for graphs of 3+ nodes.  ``rampup`` as in ``dml`` (on every node
    edge, the gates' weight times the ramp)."""
    names = ["node1", "node2", "node3"]
    return _ensemble_graph(names, model, [
        Edge("node2", "node1", "kl"), Edge("node3", "node1", "kl"),
        Edge("node2", "node3", "cos&push", gate=Gate("linear")),
        Edge("node3", "node2", "cos&push", gate=Gate("linear")),
    ], preset_rampup(rampup, rampup_length, "ens-push-pull-3node"))
