"""Search spaces as data: which graphs a search may sample (the thesis, ch. 3).

The target node (node0) and its model, and the number of nodes, are fixed;
searched are the model of every auxiliary node and the gate of every edge,
label edges included: one of a discrete gate list, or Sine gates with
``f ∈ [0, 1]`` and ``φ ∈ [0, 3/4·2π]``.  Model lists may differ per dataset
(``{default: [...], mnist5k: [...]}``) so one space runs a CPU demo and the
thesis setting alike.  Built-in spaces live in ``spaces/*.yaml``.

Ensemble spaces (the thesis, ch. 4; ``ensemble: true``): every model node has the one
fixed model (``target_model``), an ensemble node averages them and is the
target, and every model-to-model edge also searches its loss design
(``loss_designs``: Prob(±), Att(±), Prob&Att(±)).

Semi-supervised spaces (the thesis, ch. 5; ``semi_supervised: true``): self-loops, edge
losses, EMA nodes and views; see ``ssl_space.py``.  ``score: best`` scores a
trial by its best model node instead of the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..edges import GATES, LABEL
from ..graph import ENSEMBLE_MODEL, LOSS_DESIGNS, Edge, Gate, Graph, Node
from ..yamlfile import read_yaml
from .ssl_space import check_score, parse_ssl_keys, sample_ssl, ssl_size

# The gates a supervised space may list, and the one searched by its
# parameters instead (gates: sine), from the table of edge kinds.
DISCRETE_GATES = tuple(name for name, g in GATES.items() if g.search_discrete)
SINE = "sine"
SINE_PARAMS = tuple(p for p in GATES[SINE].params if p.search is not None)
PHI_MAX = GATES[SINE].param("phi").search[1]
SPACE_KEYS = ("name", "nodes", "target_model", "aux_models", "gates", "edge_loss", "temperature",
              "ensemble", "loss_designs", "semi_supervised", "edge_losses", "ema", "views", "score")
ENSEMBLE_NODE = "ensemble"


def _per_dataset(value: Any, where: str) -> dict:
    """``x`` or ``{default: x, dataset: y}`` → a mapping with a default."""
    if isinstance(value, dict):
        if "default" not in value:
            raise ValueError(f"{where}: a per-dataset mapping needs a 'default' entry")
        return dict(value)
    return {"default": value}


def _check_models(names: list, where: str) -> None:
    from ..models import model_options

    for name in names:
        if name == "auto":
            continue
        try:
            model_options(name)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None


@dataclass
class SearchSpace:
    name: str
    nodes: int
    target_model: dict = field(default_factory=lambda: {"default": "auto"})
    aux_models: dict = field(default_factory=lambda: {"default": ["auto"]})
    gates: list[str] | str = field(default_factory=lambda: ["through", "cutoff", "linear", "correct"])
    edge_loss: str = "kl"
    temperature: float = 1.0
    ensemble: bool = False
    loss_designs: list[str] | None = None
    semi_supervised: bool = False
    edge_losses: list[str] | None = None  # semi-supervised spaces (ssl_space.py)
    ema: bool = False
    views: dict | None = None
    score: str = "target"                 # target | best (the best model node)

    @classmethod
    def from_dict(cls, data: dict, where: str = "space") -> "SearchSpace":
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        for k in data:
            if k not in SPACE_KEYS:
                raise ValueError(f"{where}: unknown key {k!r}; allowed: {', '.join(SPACE_KEYS)}")
        nodes = data.get("nodes")
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"{where}.nodes: {nodes!r}; expected an integer >= 1")
        semi = data.get("semi_supervised", False)
        if not isinstance(semi, bool):
            raise ValueError(f"{where}.semi_supervised: expected true or false, got {semi!r}")
        ssl = {}
        if semi:
            ssl = parse_ssl_keys(data, where)
        else:
            for k in ("edge_losses", "ema", "views"):
                if k in data:
                    raise ValueError(f"{where}.{k}: only semi-supervised spaces have it; "
                                     "set semi_supervised: true")
        gates = ssl.get("gates") or data.get("gates", ["through", "cutoff", "linear", "correct"])
        if gates != SINE and not semi:
            if not isinstance(gates, list) or not gates:
                raise ValueError(f"{where}.gates: expected a list of gate names or 'sine'")
            for g in gates:
                if g not in DISCRETE_GATES:
                    raise ValueError(f"{where}.gates: {g!r} is not a searchable discrete gate; "
                                     f"allowed: {', '.join(DISCRETE_GATES)} (or gates: {SINE})")
        aux = _per_dataset(data.get("aux_models", ["auto"]), f"{where}.aux_models")
        for k, v in aux.items():
            if not isinstance(v, list) or not v:
                raise ValueError(f"{where}.aux_models.{k}: expected a non-empty list of models")
        edge_loss = data.get("edge_loss", "kl")
        if edge_loss not in ("kl", "cos", "pl"):
            raise ValueError(f"{where}.edge_loss: {edge_loss!r}; allowed: kl, cos, pl")
        ensemble = data.get("ensemble", False)
        if not isinstance(ensemble, bool):
            raise ValueError(f"{where}.ensemble: expected true or false, got {ensemble!r}")
        if ensemble and semi:
            raise ValueError(f"{where}: a space is either ensemble or semi_supervised, not both")
        designs = data.get("loss_designs")
        if designs is not None:
            if not isinstance(designs, list) or not designs or any(d not in LOSS_DESIGNS for d in designs):
                raise ValueError(f"{where}.loss_designs: {designs!r}; expected a non-empty list of "
                                 f"{', '.join(LOSS_DESIGNS)}")
        target = _per_dataset(data.get("target_model", "auto"), f"{where}.target_model")
        _check_models([*target.values(), *(m for v in aux.values() for m in v)], where)
        return cls(
            name=str(data.get("name", "space")), nodes=nodes,
            target_model=target, aux_models=aux, gates=gates, edge_loss=edge_loss,
            temperature=float(data.get("temperature", 1.0)), ensemble=ensemble, loss_designs=designs,
            semi_supervised=semi, edge_losses=ssl.get("edge_losses"), ema=ssl.get("ema", False),
            views=ssl.get("views"), score=check_score(data.get("score", "target"), where),
        )

    # ------------------------------------------------------------------ models
    def target_for(self, dataset: str) -> str:
        return self.target_model.get(dataset, self.target_model["default"])

    def aux_for(self, dataset: str) -> list[str]:
        return list(self.aux_models.get(dataset, self.aux_models["default"]))

    def node_names(self) -> list[str]:
        """The model nodes (an ensemble space numbers them from 1, as the thesis)."""
        first = 1 if self.ensemble or self.semi_supervised else 0
        return [f"node{i}" for i in range(first, first + self.nodes)]

    def edge_pairs(self) -> list[tuple[str, str]]:
        names = self.node_names()
        return [(s, t) for t in names for s in [LABEL, *names] if s != t]

    def size(self, dataset: str = "default") -> float:
        """Number of distinct graphs (inf for Sine gates): M^(N-1) · G^(N²), and
        for ensembles G^N (label edges) · (1 + (G-1)·D)^(N(N-1)) (cutoff edges
        carry no loss design)."""
        if self.semi_supervised:
            return ssl_size(self, dataset)
        if self.gates == SINE:
            return math.inf
        g = len(self.gates)
        if self.ensemble:
            d = len(self.loss_designs or [None])
            per_edge = 1 + (g - 1) * d if "cutoff" in self.gates else g * d
            return g ** self.nodes * per_edge ** (self.nodes * (self.nodes - 1))
        return len(self.aux_for(dataset)) ** (self.nodes - 1) * g ** len(self.edge_pairs())

    # ---------------------------------------------------------------- sampling
    def sample(self, trial, dataset: str) -> Graph:
        """A graph from an Optuna trial (parameters named model_i, gate_src_dst,
        f_src_dst, phi_src_dst; semi-supervised spaces also loss_src_dst)."""
        if self.semi_supervised:
            return sample_ssl(self, trial, dataset)
        names = self.node_names()
        if self.ensemble:
            nodes = [Node(n, self.target_for(dataset)) for n in names] + [Node(ENSEMBLE_NODE, ENSEMBLE_MODEL)]
        else:
            nodes = [Node(names[0], self.target_for(dataset))]
            aux = self.aux_for(dataset)
            for n in names[1:]:
                nodes.append(Node(n, trial.suggest_categorical(f"model_{n}", aux)))
        edges = []
        for s, t in self.edge_pairs():
            key = f"{s}_{t}"
            if self.gates == SINE:  # f_src_dst, phi_src_dst over the table's search ranges
                gate = Gate(SINE, **{p.name: trial.suggest_float(f"{p.name}_{key}", *p.search)
                                     for p in SINE_PARAMS})
            else:
                gate = Gate(trial.suggest_categorical(f"gate_{key}", list(self.gates)))
            loss = "ce" if s == LABEL else self.edge_loss
            if s != LABEL and self.loss_designs and gate.kind != "cutoff":
                loss = trial.suggest_categorical(f"loss_{key}", list(self.loss_designs))
            edges.append(Edge(s, t, loss, gate, T=self.temperature if s != LABEL else 1.0))
        target = ENSEMBLE_NODE if self.ensemble else names[0]
        return Graph(nodes, edges, target, name=f"{self.name}")


    def score_of(self, row: dict, graph: Graph) -> float:
        """A trial's score from a metrics row: the target's validation accuracy,
        or (``score: best``) the best model node's."""
        if self.score == "best":
            return max(row[f"val_acc:{n.name}"] for n in graph.nodes if not n.is_ensemble)
        return row[f"val_acc:{graph.target_name}"]


def builtin_spaces() -> dict[str, Path]:
    root = resources.files(__package__) / "spaces"
    return {p.name[:-5]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def load_space(name_or_path: str) -> SearchSpace:
    spaces = builtin_spaces()
    if name_or_path in spaces:
        path = spaces[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise ValueError(f"search space {name_or_path!r} is neither built in nor a file; "
                             f"built-in: {', '.join(sorted(spaces))}")
    data = read_yaml(path, "search space file")
    return SearchSpace.from_dict(data, where=path.name)
