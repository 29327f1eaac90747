"""The table of edge kinds: every gate, loss and coefficient schedule that an
edge of ktgfast can have, one entry each.

An entry says everything the Python side knows about its kind: the integer
code it has in the edge table (shared with ``csrc/common/gated_edge_loss.h``
and ``csrc/common/attention_crop.h``; ``tests/test_edge_kinds.py`` parses the
C++ enums and fails on any difference), its parameters (type, required or
not, default, allowed range, the packed column), its rule on an edge from the
label, a pure-PyTorch reference (``ktgfast.reference`` and the benchmark
baselines evaluate these instead of their own copies), its mixup form, how a
drawing colours it and whether a search may pick it.  The name → code dicts
``GATE_KINDS``, ``LOSS_KINDS`` and ``ATTENTION_LOSS_KINDS`` are views of it.

Adding a gate: its branch in ``gate_weight`` of ``csrc/common/gated_edge_loss.h``
(and the enum), one :class:`GateKind` entry in :data:`GATES`, and tests.

Gates (per-sample weight, ``p = k / k_end`` in [0, 1]; the thesis, ch. 3
eqs. 3.4-3.8 and ch. 5 eqs. 5.6-5.8):

==============  ============================================================
``through``     1
``cutoff``      0; the edge is skipped entirely (no compute)
``linear``      ``p``
``neg_linear``  ``1 - p``
``correct``     1 if the source's arg-max equals the label, else 0 (label
                edge: 1).  The masked sum is divided by the whole batch ``B``
                (not by the number of passing samples), as in the thesis.
``sine``        ``0.5 + 0.5 sin(2π f p + φ)``
``threshold``   1 if ``max softmax(z_s)`` (at T = 1) ``> tau``, else 0 (label
                edge: 1); FixMatch's confidence mask (Sohn et al. 2020),
                also divided by the whole ``B``.
==============  ============================================================

A weight that is not > 0 closes the gate for that sample (the op neither
computes nor counts it).

Probability losses (per sample, before gate and coefficient; ``p = softmax(z/T)``):

=========  ================================================================
``kl``     ``KL(p_s || p_t)``; multiplied by ``T²`` when ``t2`` is true
           (Hinton et al. 2015).  From the label it equals ``ce`` (a one-hot
           has zero entropy, the thesis's eq. 3.1).
``ce``     cross-entropy of ``softmax(z_t / T)`` to the label (label edges).
``cos``    cosine similarity of ``p_s`` and ``p_t`` (the "push" of the
           thesis's eq. 4.7; minimising it pushes the distributions apart).
``pl``     cross-entropy to the one-hot of the source's arg-max (pseudo-label,
           Lee 2013).
=========  ================================================================

Attention-map losses (op ``attention_crop_loss``; square crops centred at the
source map's arg-max, each L2-normalised; the thesis's eqs. 4.8-4.9):

=========  ================================================================
``pull``   mean over crops of the squared error of the normalised crops,
           divided by the crop's cell count ``d`` (``pull="mean"``, a mean
           squared error as the thesis names it) or summed (``"sum"``).
``push``   mean over crops of the cosine of the crops, minimised.
=========  ================================================================

Coefficient schedules (a per-step factor on an edge's coefficient, evaluated
on the device by the op wrappers from ``p``, independent of the gate):

================  ==========================================================
``none``          1
``linear``        ``p``
``neg_linear``    ``1 - p``
``ramp_linear``   ``min(p / L, 1)``
``ramp_sigmoid``  ``exp(-5 (1 - min(p / L, 1))²)``: the sigmoid-shaped
                  ramp-up of Laine & Aila 2017 (temporal ensembling) and
                  Tarvainen & Valpola 2017 (Mean Teacher)
================  ==========================================================

``L`` in (0, 1] is the ramp's length as a fraction of training.  ``p`` is
clamped to [0, 1] before a schedule is evaluated.  Unlike a gate, a schedule
never closes the edge: the op still computes it and counts its samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

LABEL = "label"       # the source of a label edge
LABEL_SOURCE = -1     # its code in the edge table (csrc kLabelSource)
REDUCTIONS = {"mean": 0, "sum": 1}   # csrc enum Reduction
PULL_NORMS = {"mean": 0, "sum": 1}   # csrc enum PullNorm (attention pull over a crop's cells)
# The packed columns (csrc enums EdgeIndexCol and EdgeParamCol).
EDGE_INDEX_COLUMNS = ("src", "dst", "loss", "gate")
EDGE_PARAM_COLUMNS = ("T", "coef", "gate_a", "gate_b")
MAX_CROPS = 16  # csrc/common/attention_crop.h kMaxCrops


# ---------------------------------------------------------------------------
# Parameters

@dataclass(frozen=True)
class Param:
    """One numeric parameter of a kind.

    ``default``: its value when a Python caller leaves it out (None: it has
    none and must be given).  ``required``: a graph file must write it even
    when it has a default for Python callers (the sine gate's f and φ have no
    value the papers agree on).  ``check``: allowed values, described by
    ``rule``.  ``column``: where the edge table packs it (gates only).
    ``period``: the canonical value is taken modulo it.  ``search``: the range
    a search samples (None: never searched)."""

    name: str
    doc: str
    rule: str
    check: Callable[[float], bool]
    default: float | None = None
    required: bool = False
    column: str | None = None
    period: float | None = None
    search: tuple[float, float] | None = None
    type: type = float

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (None when it is)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        if not self.check(float(value)):
            return self.rule
        return None

    def canonical(self, value: float) -> float:
        value = float(value)
        return value % self.period if self.period else value


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _probability(x: float) -> bool:
    return 0.0 <= x <= 1.0


def _fraction(x: float) -> bool:
    return 0.0 < x <= 1.0


# ---------------------------------------------------------------------------
# Gates

class GateSource:
    """What a per-sample gate reads of an edge's source: ``correct`` (its
    arg-max equals the label) and ``max_prob`` (max softmax at T = 1), both
    computed on first use from ``logits`` ``(..., B, C)`` and ``labels``.
    The vectorised benchmark baseline passes precomputed tensors instead."""

    def __init__(self, logits: torch.Tensor | None = None, labels: torch.Tensor | None = None, *,
                 correct: torch.Tensor | None = None, max_prob: torch.Tensor | None = None):
        self._logits, self._labels = logits, labels
        self._correct, self._max_prob = correct, max_prob

    @property
    def correct(self) -> torch.Tensor:
        if self._correct is None:
            self._correct = self._logits.argmax(-1) == self._labels
        return self._correct

    @property
    def max_prob(self) -> torch.Tensor:
        if self._max_prob is None:
            self._max_prob = F.softmax(self._logits, -1).amax(-1)
        return self._max_prob


# weight(p, params, source) -> a tensor broadcastable to the samples: p is the
# progress (a scalar tensor), params maps parameter names to floats or tensors.
GateWeight = Callable[[torch.Tensor, Mapping[str, Any], GateSource], torch.Tensor]


class _Parametrised:
    """Lookups over a kind's ``params`` (gates and coefficient schedules)."""

    params: tuple[Param, ...]

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


@dataclass(frozen=True)
class GateKind(_Parametrised):
    """One gate.  ``label_passes``: on an edge from the label it is 1 (the
    label is always correct and always confident).  ``per_sample``: it reads
    the source's logits (so it needs the source on the same batch).
    ``needs_labels``: it compares with the label, so it cannot act on
    unlabelled data.  ``skip``: the edge computes nothing.  ``schedule``: the
    coefficient schedule with the same weight, where one exists (a gate that
    depends on progress only).  ``mixup_form``: ``(a, b, c)`` with the weight
    on a label edge = ``a + b·p + c·sin(2π f p + φ)`` (for mixed targets,
    ``ktgfast.train.mixup_loss``; None: it has none).  ``color``: its colour
    in drawings.  ``search_discrete`` / ``search_ssl``: a supervised /
    semi-supervised search space may list it as a choice."""

    name: str
    code: int
    cpp: str
    doc: str
    weight: GateWeight
    params: tuple[Param, ...] = ()
    label_passes: bool = False
    per_sample: bool = False
    needs_labels: bool = False
    skip: bool = False
    schedule: str | None = None
    mixup_form: tuple[float, float, float] | None = None
    color: str = "black"
    search_discrete: bool = False
    search_ssl: bool = False
    text: Callable[[Mapping[str, float]], str] | None = None  # how a summary writes it

    def describe(self, params: Mapping[str, float]) -> str:
        return self.text(params) if self.text else self.name


def _ones(p: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(p)


SINE_F = Param("f", "frequency: cycles over the whole run", "sine gate parameters must be finite",
               _finite, default=0.0, required=True, column="gate_a", search=(0.0, 1.0))
SINE_PHI = Param("phi", "phase in radians", "sine gate parameters must be finite", _finite,
                 default=0.0, required=True, column="gate_b", period=2 * math.pi,
                 search=(0.0, 0.75 * 2 * math.pi))
THRESHOLD_TAU = Param("tau", "threshold on the source's max probability (FixMatch: 0.95)",
                      "a probability threshold must be in [0, 1]", _probability, default=0.95,
                      column="gate_a")

_GATES = (
    GateKind("through", 0, "kGateThrough", "1", lambda p, a, s: _ones(p), schedule="none",
             mixup_form=(1.0, 0.0, 0.0), search_discrete=True, search_ssl=True),
    GateKind("cutoff", 1, "kGateCutoff", "0: the edge is skipped", lambda p, a, s: torch.zeros_like(p),
             skip=True, color="gray70", search_discrete=True, search_ssl=True),
    GateKind("linear", 2, "kGateLinear", "p = k / k_end", lambda p, a, s: p, schedule="linear",
             mixup_form=(0.0, 1.0, 0.0), color="blue", search_discrete=True, search_ssl=True),
    GateKind("neg_linear", 3, "kGateNegLinear", "1 - p", lambda p, a, s: 1 - p,
             schedule="neg_linear", mixup_form=(1.0, -1.0, 0.0), color="purple", search_ssl=True),
    GateKind("correct", 4, "kGateCorrect", "1 if the source's arg-max is the label",
             lambda p, a, s: s.correct.to(p.dtype), label_passes=True, per_sample=True,
             needs_labels=True, mixup_form=(1.0, 0.0, 0.0), color="red", search_discrete=True),
    GateKind("sine", 5, "kGateSine", "0.5 + 0.5 sin(2π f p + φ)",
             lambda p, a, s: 0.5 + 0.5 * torch.sin(2 * math.pi * a["f"] * p + a["phi"]),
             params=(SINE_F, SINE_PHI), mixup_form=(0.5, 0.0, 0.5), color="darkgreen",
             text=lambda a: f"sine(f={a['f']:.3g}, phi={a['phi']:.3g})"),
    GateKind("threshold", 6, "kGateThreshold", "1 if the source's max probability > tau",
             lambda p, a, s: (s.max_prob > a["tau"]).to(p.dtype), params=(THRESHOLD_TAU,),
             label_passes=True, per_sample=True, mixup_form=(1.0, 0.0, 0.0), color="orange",
             search_ssl=True, text=lambda a: f"threshold({a['tau']:.3g})"),
)
GATES: dict[str, GateKind] = {g.name: g for g in _GATES}


def gate_weight(kind: str, params: Mapping[str, Any], progress: torch.Tensor,
                source: GateSource | None) -> torch.Tensor:
    """The reference weight of a gate (``source`` None on a label edge), not
    yet clamped: a weight that is not > 0 closes the gate."""
    entry = GATES[kind]
    if source is None and entry.label_passes:
        return _ones(progress)
    return entry.weight(progress, params, source)


# ---------------------------------------------------------------------------
# Losses

# reference(zt, zs, labels, T) -> (B,) per-sample loss; zs None on a label edge.
LossReference = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor, float], torch.Tensor]
# crop term(u, v, pull_mean) of two L2-normalised crops -> a scalar.
CropTerm = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


@dataclass(frozen=True)
class LossKind:
    """One loss.  ``op``: ``gated_edge_loss`` (probabilities) or
    ``attention_crop_loss`` (attention maps).  ``from_label`` /
    ``from_node``: which sources it takes.  ``t2``: its coefficient is
    multiplied by T² when the edge's ``t2`` is set.  ``reference``: the
    per-sample loss (probability losses) or the term of one crop (attention
    losses), in plain PyTorch."""

    name: str
    code: int
    cpp: str
    doc: str
    op: str
    reference: Callable
    from_label: bool = False
    from_node: bool = True
    t2: bool = False


def _ce(zt, zs, y, T):
    return F.cross_entropy(zt / T, y, reduction="none")


def _kl(zt, zs, y, T):
    if zs is None:  # KL(one-hot || p_t) = CE
        return _ce(zt, zs, y, T)
    return F.kl_div(F.log_softmax(zt / T, -1), F.softmax(zs / T, -1), reduction="none").sum(-1)


def _cos(zt, zs, y, T):
    return F.cosine_similarity(F.softmax(zt / T, -1), F.softmax(zs / T, -1), dim=-1)


def _pl(zt, zs, y, T):
    return F.cross_entropy(zt / T, zs.argmax(-1), reduction="none")


def _pull(u, v, mean):
    sq = ((u - v) ** 2).sum()
    return sq / u.numel() if mean else sq


def _push(u, v, mean):
    return (u * v).sum()


PROB_OP, ATTENTION_OP = "gated_edge_loss", "attention_crop_loss"
_LOSSES = (
    LossKind("kl", 0, "kLossKL", "KL(p_s || p_t) at T (T²-scaled with t2)", PROB_OP, _kl,
             from_label=True, t2=True),
    LossKind("ce", 1, "kLossCE", "cross-entropy to the label", PROB_OP, _ce, from_label=True,
             from_node=False),
    LossKind("cos", 2, "kLossCos", "cosine of p_s and p_t (push)", PROB_OP, _cos),
    LossKind("pl", 3, "kLossPL", "cross-entropy to the source's arg-max", PROB_OP, _pl),
    LossKind("pull", 0, "kAttPull", "squared error of normalised crops", ATTENTION_OP, _pull),
    LossKind("push", 1, "kAttPush", "cosine of normalised crops", ATTENTION_OP, _push),
)
LOSSES: dict[str, LossKind] = {k.name: k for k in _LOSSES}


# ---------------------------------------------------------------------------
# Coefficient schedules

ScheduleFactor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ScheduleKind(_Parametrised):
    """One coefficient schedule: ``factor(p, length)`` with ``p`` already
    clamped to [0, 1] and ``length`` a tensor (1 for kinds without one),
    broadcast against each other."""

    name: str
    code: int
    doc: str
    factor: ScheduleFactor
    params: tuple[Param, ...] = ()

    def describe(self, params: Mapping[str, float]) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v:.3g}' for k, v in params.items())})"


RAMP_LENGTH = Param("length", "ramp length as a fraction of training progress",
                    "a ramp length is a fraction of training, in (0, 1]", _fraction)


def _ramp(p: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    return torch.clamp(p / length, max=1.0)


_SCHEDULES = (
    ScheduleKind("none", 0, "1", lambda p, n: torch.ones_like(p * n)),
    ScheduleKind("linear", 1, "p", lambda p, n: p * torch.ones_like(n)),
    ScheduleKind("neg_linear", 2, "1 - p", lambda p, n: (1 - p) * torch.ones_like(n)),
    ScheduleKind("ramp_linear", 3, "min(p / L, 1)", _ramp, params=(RAMP_LENGTH,)),
    ScheduleKind("ramp_sigmoid", 4, "exp(-5 (1 - min(p / L, 1))²)",
                 lambda p, n: torch.exp(-5.0 * (1.0 - _ramp(p, n)) ** 2), params=(RAMP_LENGTH,)),
)
SCHEDULES: dict[str, ScheduleKind] = {s.name: s for s in _SCHEDULES}


def schedule_factor(kind: str, params: Mapping[str, Any], progress: torch.Tensor) -> torch.Tensor:
    """The reference factor of one schedule at ``progress`` (clamped to [0, 1])."""
    entry = SCHEDULES[kind]
    p = progress.clamp(0.0, 1.0)
    length = params.get("length", 1.0)
    return entry.factor(p, torch.as_tensor(length, dtype=p.dtype, device=p.device))


# ---------------------------------------------------------------------------
# Views

GATE_KINDS: dict[str, int] = {g.name: g.code for g in _GATES}
LOSS_KINDS: dict[str, int] = {k.name: k.code for k in _LOSSES if k.op == PROB_OP}
ATTENTION_LOSS_KINDS: dict[str, int] = {k.name: k.code for k in _LOSSES if k.op == ATTENTION_OP}
SCHEDULE_KINDS: dict[str, int] = {s.name: s.code for s in _SCHEDULES}
LABEL_LOSSES: tuple[str, ...] = tuple(k.name for k in _LOSSES if k.from_label)
LABEL_GATE_FORMS: dict[str, tuple[float, float, float]] = {
    g.name: g.mixup_form for g in _GATES if g.mixup_form is not None}
GATE_COLORS: dict[str, str] = {g.name: g.color for g in _GATES}

__all__ = [
    "ATTENTION_LOSS_KINDS", "ATTENTION_OP", "EDGE_INDEX_COLUMNS", "EDGE_PARAM_COLUMNS", "GATES",
    "GATE_COLORS", "GATE_KINDS", "GateKind", "GateSource", "LABEL", "LABEL_GATE_FORMS",
    "LABEL_LOSSES", "LABEL_SOURCE", "LOSSES", "LOSS_KINDS", "LossKind", "MAX_CROPS", "PROB_OP",
    "PULL_NORMS", "Param", "REDUCTIONS", "SCHEDULES", "SCHEDULE_KINDS", "ScheduleKind",
    "gate_weight", "schedule_factor",
]
