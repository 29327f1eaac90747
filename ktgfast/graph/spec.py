"""Graph, Node and Edge: a knowledge-transfer graph as plain data.

A graph is what a user writes in YAML; it is validated (``validate.py``) before
any model is built and turned into the fused op's edge table by
``Graph.edge_specs()``.  Gates are :class:`ktgfast.edges.Gate` values (a kind of
the table of edge kinds plus its parameters), the same object from the YAML
file to the packed table.  ``canonical()`` gives a form in which graphs that
compute the same thing compare and hash equal: cutoff edges are dropped (they
carry nothing), edges are sorted, a sine gate's phase is taken modulo 2π.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..edges import ATTENTION_LOSS_KINDS, LABEL, CoefSchedule, EdgeSpec, Gate
from .ssl import DEFAULT_DST_VIEW, DEFAULT_SRC_VIEW, TPL, TPL_TAU

AUTO_MODEL = "auto"  # the dataset's default model, resolved by the trainer
# A node with this model has no parameters: its logits are the mean of its
# members' logits (thesis eq. 4.10; options.members, default every model node).
ENSEMBLE_MODEL = "ensemble"
# The six loss designs of thesis §4.3.1 (tables 4.4-4.5), as edge losses: a
# probability part (kl pull / cos push) and an attention-map part (pull/push),
# joined by "&".  The names are accepted as aliases of the explicit form.
LOSS_DESIGNS = {
    "prob+": "kl", "prob-": "cos", "att+": "pull", "att-": "push",
    "prob+att+": "kl&pull", "prob-att-": "cos&push",
}


# Ramp-up kinds of the YAML -> the coefficient schedules of the edge table
# (ktgfast.edges.kinds.SCHEDULES).  ``sigmoid`` is exp(-5 (1 - t)²), the ramp-up
# of Laine & Aila 2017 and Tarvainen & Valpola 2017.  See docs/rampup.md.
RAMP_KINDS = {"linear": "ramp_linear", "sigmoid": "ramp_sigmoid"}
NO_RAMP = "none"  # on an edge: never ramped, whatever the graph says


@dataclass(frozen=True)
class Rampup:
    """A weight ramp-up of non-label edges from 0 to 1 over the first
    ``length`` of training (a fraction of the training progress
    p = k / (k_end - 1), in (0, 1]), then 1.  ``kind``: ``linear``
    (min(p / L, 1)) or ``sigmoid`` (exp(-5 (1 - min(p / L, 1))²))."""

    kind: str = "linear"
    length: float = 0.2

    def problems(self, where: str) -> list[str]:
        if self.kind not in RAMP_KINDS:
            return [f"{where}.kind: {self.kind!r}; allowed: {', '.join(RAMP_KINDS)}"]
        ok = (not isinstance(self.length, bool) and isinstance(self.length, (int, float))
              and math.isfinite(self.length) and 0 < self.length <= 1)
        if not ok:
            return [f"{where}.length: {self.length!r}; allowed: a number in (0, 1]"]
        return []

    def schedule(self) -> CoefSchedule:
        """The edge table's coefficient schedule of this ramp."""
        return CoefSchedule(RAMP_KINDS[self.kind], length=float(self.length))

    def to_data(self) -> dict:
        return {"kind": self.kind, "length": float(self.length)}

    def describe(self) -> str:
        return f"{self.kind} ramp-up over {self.length:g} of training"

    @classmethod
    def parse(cls, value: Any, where: str, allow_none: bool = True) -> "Rampup | str | None":
        """A YAML value: a mapping ``{kind, length}``, a Rampup, or ``none`` /
        null (returned as ``NO_RAMP`` / None)."""
        if value is None:
            return None
        if isinstance(value, cls):
            r = value
        elif isinstance(value, str) and value == NO_RAMP:
            return NO_RAMP
        elif isinstance(value, dict):
            for k in value:
                if k not in ("kind", "length"):
                    raise ValueError(f"{where}: unknown key {k!r}; allowed: kind, length")
            for k in ("kind", "length"):
                if k not in value:
                    raise ValueError(f"{where}.{k}: missing; a ramp-up is {{kind: "
                                     f"{'|'.join(RAMP_KINDS)}, length: a number in (0, 1]}}")
            r = cls(value["kind"], value["length"])
        else:
            raise ValueError(f"{where}: {value!r}; allowed: none or {{kind: {'|'.join(RAMP_KINDS)}, "
                             "length: a number in (0, 1]}")
        problems = r.problems(where)
        if problems:
            raise ValueError(problems[0])
        return replace(r, length=float(r.length))


@dataclass(frozen=True)
class Node:
    """A model.  ``frozen`` nodes never learn: they run in eval mode without
    gradient and need ``weights`` (or are pretrained on labels first)."""

    name: str
    model: str = AUTO_MODEL
    options: dict = field(default_factory=dict)
    frozen: bool = False
    weights: str | None = None
    ema_of: str | None = None  # an EMA node: the average of this node's weights (see ssl.py)
    # The rank that trains this node under ``--placement spread`` (docs/node_parallel.md).
    # Where the node runs, not what it computes: not part of the graph's identity (key()).
    rank: int | None = None

    def __hash__(self) -> int:
        return hash((self.name, self.model, json.dumps(self.options, sort_keys=True), self.frozen,
                     self.weights, self.ema_of))

    @property
    def is_ensemble(self) -> bool:
        return self.model == ENSEMBLE_MODEL


@dataclass(frozen=True)
class Edge:
    """Knowledge from ``src`` (a node name or ``"label"``) into ``dst``.

    ``src_view`` / ``dst_view``: the views of the two ends in semi-supervised
    graphs (``ssl.py``; None = the defaults, weak and strong).  ``rampup``:
    None (the graph's), ``"none"`` (never ramped) or a :class:`Rampup`."""

    src: str
    dst: str
    loss: str = "kl"
    gate: Gate = field(default_factory=Gate)
    T: float = 1.0
    weight: float = 1.0
    t2: bool = True
    src_view: str | None = None
    dst_view: str | None = None
    rampup: Rampup | str | None = None

    def canonical(self) -> "Edge":
        loss = LOSS_DESIGNS.get(self.loss, self.loss)
        loss = "ce" if self.src == LABEL and loss == "kl" else loss
        gate = self.gate.canonical()
        if loss == TPL and gate.kind in ("through", "threshold"):
            # one threshold in all: pl under a threshold gate (ssl.lower_edge)
            tau = max(TPL_TAU, gate.tau) if gate.kind == "threshold" else TPL_TAU
            loss, gate = "pl", Gate("threshold", tau=tau)
        return replace(self, loss=loss, gate=gate, T=float(self.T), weight=float(self.weight),
                       src_view=None if self.src_view == DEFAULT_SRC_VIEW else self.src_view,
                       dst_view=None if self.dst_view == DEFAULT_DST_VIEW else self.dst_view)

    def parts(self) -> tuple[str | None, str | None]:
        """``(probability loss, attention loss)``, either None: ``"kl&pull"`` ->
        ``("kl", "pull")``, ``"cos"`` -> ``("cos", None)``."""
        prob = att = None
        for part in LOSS_DESIGNS.get(self.loss, self.loss).split("&"):
            if part in ATTENTION_LOSS_KINDS:
                att = part
            else:
                prob = part
        return prob, att


@dataclass
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    target: str | None = None
    name: str = ""
    reduction: str = "mean"
    # Attention edges: crop sizes (None: the models' own, ResNet (3, 5, 7), ABN
    # (3, 7, 11)) and the pull's normalisation (mean: ÷ crop size, or sum).
    crop_sizes: list[int] | None = None
    attention_pull: str = "mean"
    # Label edges on a labelled batch, every other edge on an unlabelled one
    # (the thesis, ch. 5; see ssl.py).  Self-loops, EMA nodes and views need it.
    semi_supervised: bool = False
    # Weight ramp-up of every non-label edge (an edge's own ``rampup`` overrides).
    rampup: Rampup | None = None

    # -- lookups -----------------------------------------------------------
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def index(self, name: str) -> int:
        return self.node_names().index(name)

    def node(self, name: str) -> Node:
        return self.nodes[self.index(name)]

    def incoming(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.dst == name]

    def active_edges(self) -> list[Edge]:
        return [e for e in self.edges if e.gate.kind != "cutoff"]

    def learns(self, name: str) -> bool:
        """A node learns unless frozen, an ensemble, or every incoming edge is
        cut off.  An ensemble "learns" for scoring when one member does."""
        node = self.node(name)
        if node.is_ensemble:
            return any(self.learns(m) for m in self.members(name))
        if node.ema_of is not None:  # follows its source's weights
            return node.ema_of != name and self.learns(node.ema_of)
        return not node.frozen and any(e.gate.kind != "cutoff" for e in self.incoming(name))

    def members(self, name: str) -> list[str]:
        """The model nodes an ensemble node averages (empty for a model node)."""
        node = self.node(name)
        if not node.is_ensemble:
            return []
        listed = node.options.get("members")
        return list(listed) if listed else [n.name for n in self.nodes if not n.is_ensemble]

    def has_attention_edges(self) -> bool:
        return any(e.parts()[1] is not None for e in self.active_edges())

    @property
    def target_name(self) -> str:
        return self.target if self.target is not None else self.nodes[0].name

    def ramp_of(self, e: Edge) -> Rampup | None:
        """The ramp-up of edge ``e``: its own, else the graph's; label edges
        are never ramped."""
        if e.src == LABEL or e.rampup == NO_RAMP:
            return None
        if isinstance(e.rampup, Rampup):
            return e.rampup
        return self.rampup if isinstance(self.rampup, Rampup) else None  # None or "none"

    def coef_schedule_of(self, e: Edge) -> CoefSchedule | None:
        ramp = self.ramp_of(e)
        return ramp.schedule() if ramp is not None else None

    # -- the op's edge table --------------------------------------------------
    def edge_specs(self) -> list[EdgeSpec]:
        """The probability parts of the edges (for ``gated_edge_loss``); slots
        are node indices."""
        return self._specs(0)

    def attention_specs(self) -> list[EdgeSpec]:
        """The attention-map parts of the edges (for ``attention_crop_loss``)."""
        return self._specs(1)

    def _specs(self, part: int) -> list[EdgeSpec]:
        idx = {n: i for i, n in enumerate(self.node_names())}
        return [
            EdgeSpec(src=LABEL if e.src == LABEL else idx[e.src], dst=idx[e.dst], loss=e.parts()[part],
                     gate=e.gate, T=e.T, weight=e.weight, t2=e.t2, coef_schedule=self.coef_schedule_of(e))
            for e in self.edges if e.parts()[part] is not None
        ]

    # -- canonical form and identity -------------------------------------------
    def canonical(self) -> "Graph":
        order = {n: i for i, n in enumerate([LABEL, *self.node_names()])}
        # ramps resolved per edge (the graph's written on each edge it applies to)
        edges = sorted(
            (replace(e.canonical(), rampup=self.ramp_of(e)) for e in self.edges if e.gate.kind != "cutoff"),
            key=lambda e: (order[e.dst], order[e.src], e.loss, e.src_view or "", e.dst_view or ""),
        )
        crops = sorted(set(self.crop_sizes)) if self.crop_sizes else None
        return Graph(list(self.nodes), edges, self.target_name, "", self.reduction, crops,
                     self.attention_pull, self.semi_supervised, None)

    def key(self) -> str:
        """A canonical JSON string: equal for graphs that compute the same thing."""
        d = self.canonical()._to_dict(identity=True)
        d.pop("name", None)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def digest(self, n: int = 12) -> str:
        return hashlib.sha256(self.key().encode()).hexdigest()[:n]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    # -- (de)serialisation -----------------------------------------------------
    def to_dict(self) -> dict:
        """The YAML form (``save_graph``; ``from_dict`` reads it back)."""
        return self._to_dict(identity=False)

    def _to_dict(self, identity: bool) -> dict:
        # identity: the form key() hashes, where a gate writes only the
        # parameters that differ from their defaults (as when gates had flat
        # f/phi/tau fields, so digests of existing graphs stay the same); the
        # YAML form also writes the parameters a graph file must give.
        def edge(e: Edge) -> dict:
            d = {"src": e.src, "dst": e.dst, "loss": e.loss}
            d["gate"] = e.gate.to_data(minimal=identity)
            for k in ("T", "weight", "t2", "src_view", "dst_view"):
                if getattr(e, k) != getattr(Edge("a", "b"), k):
                    d[k] = getattr(e, k)
            if e.rampup is not None:  # written only when set: graphs without ramps keep their keys
                d["rampup"] = e.rampup.to_data() if isinstance(e.rampup, Rampup) else e.rampup
            return d

        def node(n: Node) -> dict:
            d = {"name": n.name, "model": n.model}
            if n.options:
                d["options"] = dict(n.options)
            for k in ("frozen", "weights", "ema_of"):
                if getattr(n, k) != getattr(Node("x"), k):
                    d[k] = getattr(n, k)
            if n.rank is not None and not identity:  # placement, not math: outside key()
                d["rank"] = n.rank
            return d

        out = {"name": self.name, "target": self.target_name, "reduction": self.reduction,
               "nodes": [node(n) for n in self.nodes], "edges": [edge(e) for e in self.edges]}
        # Written only when set, so graphs without attention keep their keys.
        if self.crop_sizes is not None:
            out["crop_sizes"] = list(self.crop_sizes)
        if self.attention_pull != "mean":
            out["attention_pull"] = self.attention_pull
        if self.semi_supervised:
            out["semi_supervised"] = True
        if isinstance(self.rampup, Rampup):
            out["rampup"] = self.rampup.to_data()
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "graph") -> "Graph":
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping with nodes and edges, got {type(data).__name__}")
        _check_keys(data, cls, where)
        nodes_raw = data.get("nodes")
        if not isinstance(nodes_raw, list):
            raise ValueError(f"{where}.nodes: expected a list of nodes, got {nodes_raw!r}")
        nodes = []
        for i, n in enumerate(nodes_raw):
            w = f"{where}.nodes[{i}]"
            if isinstance(n, str):
                n = {"name": n}
            if not isinstance(n, dict):
                raise ValueError(f"{w}: expected a mapping, got {n!r}")
            _check_keys(n, Node, w)
            if "name" not in n:
                raise ValueError(f"{w}.name: every node needs a name")
            nodes.append(Node(**{**n, "options": dict(n.get("options") or {})}))
        edges = []
        for i, e in enumerate(data.get("edges") or []):
            w = f"{where}.edges[{i}]"
            if not isinstance(e, dict):
                raise ValueError(f"{w}: expected a mapping, got {e!r}")
            _check_keys(e, Edge, w)
            for req in ("src", "dst"):
                if req not in e:
                    raise ValueError(f"{w}.{req}: missing; every edge needs src and dst")
            e = dict(e)
            e["gate"] = Gate.parse(e.get("gate", "through"), f"{w}.gate")  # checked against the table
            for k in ("T", "weight"):
                if k in e:
                    e[k] = _number(e[k], f"{w}.{k}")
            if "rampup" in e:
                e["rampup"] = Rampup.parse(e["rampup"], f"{w}.rampup")
            edges.append(Edge(**e))
        crops = data.get("crop_sizes")
        if crops is not None and (not isinstance(crops, list) or not crops or not all(
                isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in crops)):
            raise ValueError(f"{where}.crop_sizes: expected a non-empty list of positive ints, got {crops!r}")
        semi = data.get("semi_supervised", False)
        if not isinstance(semi, bool):
            raise ValueError(f"{where}.semi_supervised: expected true or false, got {semi!r}")
        rampup = Rampup.parse(data.get("rampup"), f"{where}.rampup")
        if rampup == NO_RAMP:
            rampup = None
        return cls(nodes, edges, data.get("target"), data.get("name", ""), data.get("reduction", "mean"),
                   crops, data.get("attention_pull", "mean"), semi, rampup)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _check_keys(data: dict, cls, where: str) -> None:
    allowed = [f.name for f in fields(cls)]
    for k in data:
        if k not in allowed:
            raise ValueError(f"{where}: unknown key {k!r}; allowed: {', '.join(allowed)}")
