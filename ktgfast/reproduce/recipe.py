"""A paper table as data: a :class:`Recipe` (the table's common training
recipe, data split and seeds) holding :class:`Row` s (one line of the table:
its graph, method and the paper's numbers).

Where a row's graph comes from is said by ``Row.source``:

* ``paper``    -- exactly the graph the paper trains (a preset such as ``dml``);
* ``text``     -- rebuilt from the paper's *text* where its figure is not
                  machine-readable in our copy; what the text leaves open is ours
                  and said in the YAML's header;
* ``stand-in`` -- the paper's graph (a searched one) cannot be recovered from our
                  copy; the row trains a graph of the same nodes and models so the
                  row runs, and ``--graph ROW=FILE`` swaps in a searched graph
                  (``ktgfast search ... `` writes ``best_graph.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

GRAPHS = Path(__file__).parent / "graphs"
SOURCES = ("paper", "text", "stand-in", "user")
METHODS = ("ktg", "ssl", "self-distill", "ban", "distill")
TARGET = "target"  # a paper metric key meaning "the test accuracy of the graph's target node"


@dataclass(frozen=True)
class Paper:
    """One number the paper prints (test accuracy %, mean ± std over its seeds)."""

    mean: float
    std: float | None = None

    def __str__(self) -> str:
        return f"{self.mean:.2f}" + (f" ± {self.std:.2f}" if self.std is not None else "")


@dataclass(frozen=True)
class Row:
    """One line of a paper table.

    ``graph``: a preset name (with ``graph_args``) or a YAML file name under
    ``ktgfast/reproduce/graphs/``.  ``paper``: metric -> the paper's number,
    where a metric is a key of the run's result (``test_acc:NODE``;
    ``target`` = the graph's target node; ``test_acc:gen3`` for generation
    runs).  ``config``: TrainConfig fields that differ from the recipe's.
    ``distill``: DistillSettings fields for ``method="distill"`` (the teachers
    are the recipe's teacher run).
    """

    name: str
    label: str                       # the row as the paper's table writes it
    graph: str
    source: str = "paper"
    method: str = "ktg"
    graph_args: dict = field(default_factory=dict)
    paper: dict[str, Paper] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    distill: dict | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"row {self.name!r}: source = {self.source!r}; allowed: {', '.join(SOURCES)}")
        if self.method not in METHODS:
            raise ValueError(f"row {self.name!r}: method = {self.method!r}; allowed: {', '.join(METHODS)}")
        if (self.method == "distill") != (self.distill is not None):
            raise ValueError(f"row {self.name!r}: distill settings go with method 'distill' only")

    @property
    def graph_ref(self) -> str:
        """What ``Trainer`` takes: the preset name or the YAML file's path."""
        if self.graph.endswith((".yaml", ".yml")):
            path = Path(self.graph)
            return str(path if path.is_absolute() else GRAPHS / path)
        return self.graph

    def with_graph(self, path: str) -> "Row":
        """This row training a user's graph file (e.g. a search's best_graph.yaml)."""
        return replace(self, graph=str(Path(path).resolve()), graph_args={}, source="user")


@dataclass(frozen=True)
class Recipe:
    """One paper table: the recipe every row shares, and the rows.

    ``train``: the TrainConfig fields of the paper's recipe (epochs, lr,
    batch_size, schedule, milestones, momentum, nesterov, weight_decay, ...);
    a row's ``config`` overrides them.  ``teacher``: a row trained once
    (seed 0) before the others, whose run folder the distillation rows read.
    ``differs``: what this recipe does differently from the paper, said plainly.
    """

    name: str
    paper: str                       # authors / document, year, table
    title: str
    dataset: str                     # a key of ktgfast.reproduce.data.SOURCES
    models: str
    split: str
    train: dict
    seeds: tuple[int, ...]
    rows: tuple[Row, ...]
    teacher: Row | None = None
    differs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [r.name for r in self.rows]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"recipe {self.name!r}: duplicate row names {dup}")
        if any((r.method == "distill") and self.teacher is None for r in self.rows):
            raise ValueError(f"recipe {self.name!r}: distillation rows need a teacher row")

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise ValueError(f"recipe {self.name!r} has no row {name!r}; allowed: "
                         f"{', '.join(r.name for r in self.rows)}")

    def select(self, names: list[str] | None) -> list[Row]:
        """The rows named (all when None), in the recipe's order; an unknown
        name is one line naming the allowed rows."""
        if not names:
            return list(self.rows)
        for n in names:
            self.row(n)
        return [r for r in self.rows if r.name in names]


__all__ = ["GRAPHS", "METHODS", "Paper", "Recipe", "Row", "SOURCES", "TARGET"]
