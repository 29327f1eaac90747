"""One edge of the fused ops' tables: :class:`EdgeSpec`."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from .kinds import ATTENTION_LOSS_KINDS, LABEL, LABEL_LOSSES, LOSS_KINDS, LOSSES
from .params import NO_VALUE, CoefSchedule, Gate

# The order of the positional arguments of earlier versions (see EdgeSpec).
_POSITIONAL = ("src", "dst", "loss", "gate", "T", "weight", "t2", "f", "phi", "tau")


def _choice(value: str, allowed: dict, what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value


@dataclass(frozen=True, init=False)
class EdgeSpec:
    """One edge, by keywords: ``EdgeSpec(src=0, dst=1, loss="kl",
    gate=Gate("sine", f=0.5, phi=4.71), T=4.0, weight=0.5)``.

    ``src`` is a slot index or ``"label"``, ``dst`` a slot index.  ``gate``: a
    :class:`Gate` or a gate name; as a convenience the gate's parameters may be
    passed as ``f=``, ``phi=``, ``tau=`` beside a name (dropped where the gate
    has no such parameter).  ``coef_schedule``: a :class:`CoefSchedule` (or its
    name, or ``{kind, length}``) multiplying the coefficient each step; default
    none.  ``spec.f`` / ``spec.phi`` / ``spec.tau`` read the gate's
    parameters (their defaults where the gate has none).

    Positional arguments (the order of earlier versions: src, dst, loss,
    gate, T, weight, t2, f, phi, tau) still work but warn; they will go.
    """

    src: int | str
    dst: int
    loss: str = "kl"
    gate: Gate = field(default_factory=Gate)
    T: float = 1.0
    weight: float = 1.0
    t2: bool = True
    coef_schedule: CoefSchedule = field(default_factory=CoefSchedule)

    def __init__(self, *args: Any, src: int | str | None = None, dst: int | None = None,
                 loss: str = "kl", gate: Gate | str = "through", T: float = 1.0,
                 weight: float = 1.0, t2: bool = True, coef_schedule: Any = None, **gate_params: Any):
        given = dict(src=src, dst=dst, loss=loss, gate=gate, T=T, weight=weight, t2=t2)
        if args:
            if len(args) > len(_POSITIONAL):
                raise TypeError(f"EdgeSpec takes at most {len(_POSITIONAL)} positional arguments")
            warnings.warn("EdgeSpec takes keyword arguments: EdgeSpec(src=..., dst=..., loss=..., "
                          "gate=...); positional arguments will be removed", DeprecationWarning,
                          stacklevel=2)
            for name, value in zip(_POSITIONAL, args):
                if name in ("f", "phi", "tau"):
                    gate_params[name] = value
                else:
                    given[name] = value
        if given["src"] is None or given["dst"] is None:
            raise TypeError("EdgeSpec needs src and dst")
        for k in gate_params:
            if k not in Gate.LEGACY:
                raise TypeError(f"EdgeSpec got an unexpected keyword argument {k!r}")
        g = given["gate"]
        if isinstance(g, Gate):
            if gate_params:
                raise TypeError("EdgeSpec: pass gate parameters inside the Gate, not beside it")
        else:
            g = Gate(g, **gate_params)
        given["gate"] = g
        given["coef_schedule"] = CoefSchedule.of(coef_schedule)
        for k, v in given.items():
            object.__setattr__(self, k, v)

    # -- derived -----------------------------------------------------------
    @property
    def from_label(self) -> bool:
        return self.src == LABEL

    @property
    def coef(self) -> float:
        """The constant factor of the edge: weight, times T² for scaled KL."""
        scaled = self.t2 and self.loss in LOSSES and LOSSES[self.loss].t2
        return self.weight * (self.T**2 if scaled else 1.0)

    @property
    def f(self) -> float:
        return self.gate.f

    @property
    def phi(self) -> float:
        return self.gate.phi

    @property
    def tau(self) -> float:
        return self.gate.tau

    def gate_params(self) -> tuple[float, float]:
        """The gate's packed ``(gate_a, gate_b)`` columns."""
        return self.gate.pack()

    # -- checks --------------------------------------------------------------
    def validate(self, num_slots: int, where: str = "edge", losses: dict = LOSS_KINDS) -> "EdgeSpec":
        _choice(self.loss, losses, f"{where}.loss")
        _choice(self.gate.kind, self.gate.TABLE, f"{where}.gate")
        if not self.from_label:
            if isinstance(self.src, bool) or not isinstance(self.src, int):
                raise ValueError(f"{where}.src must be a node index or 'label', got {self.src!r}")
            if not 0 <= self.src < num_slots:
                raise ValueError(
                    f"{where}.src = {self.src} is not a node; allowed: 'label' or 0..{num_slots - 1}"
                )
        if isinstance(self.dst, bool) or not isinstance(self.dst, int) or not 0 <= self.dst < num_slots:
            raise ValueError(f"{where}.dst = {self.dst!r} is not a node; allowed: 0..{num_slots - 1}")
        if self.from_label and losses is ATTENTION_LOSS_KINDS:
            raise ValueError(f"{where}: an attention edge needs a source node, not the label")
        if self.from_label and self.loss not in LABEL_LOSSES:
            raise ValueError(
                f"{where}: loss {self.loss!r} cannot come from the label; allowed: {', '.join(LABEL_LOSSES)}"
            )
        if not self.from_label and not LOSSES[self.loss].from_node:
            raise ValueError(f"{where}: loss {self.loss!r} is the label edge's loss; from a node use "
                             f"{', '.join(k for k in losses if LOSSES[k].from_node)}")
        if not (math.isfinite(self.T) and self.T > 0):
            raise ValueError(f"{where}.T = {self.T!r}; the temperature must be a finite number > 0")
        if not math.isfinite(self.weight):
            raise ValueError(f"{where}.weight = {self.weight!r}; it must be finite")
        for value, path in ((self.gate, where), (self.coef_schedule, f"{where}.coef_schedule")):
            for problem in value.problems(path):
                listing = ", ".join(f"{k}={v}" for k, v in value.params)
                got = f", got {listing}" if problem.value is not NO_VALUE else ""
                raise ValueError(problem.line(" = ") + got)
        return self
