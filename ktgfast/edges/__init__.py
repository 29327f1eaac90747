"""Edges of the fused ops: the table of edge kinds (``kinds.py``), gates and
coefficient schedules with their parameters (``params.py``), one edge
(:class:`EdgeSpec`, ``spec.py``) and the packed edge tables (``table.py``).

An *edge* carries knowledge from a source (a logit slot, or the label) to a
destination slot.  Slots are usually model nodes; for semi-supervised graphs a
node's outputs on two views are two slots, so consistency and pseudo-label edges
are ordinary edges between slots.  What each gate, loss and schedule computes
is documented with its entry in :mod:`ktgfast.edges.kinds`.

The batch reduction is ``mean`` (divide by ``B``, the default) or ``sum`` (the
thesis's eq. 3.2 as written).
"""
from .kinds import (
    ATTENTION_LOSS_KINDS,
    EDGE_PARAM_COLUMNS,
    GATE_COLORS,
    GATE_KINDS,
    GATES,
    LABEL,
    LABEL_GATE_FORMS,
    LABEL_LOSSES,
    LABEL_SOURCE,
    LOSS_KINDS,
    LOSSES,
    MAX_CROPS,
    PULL_NORMS,
    REDUCTIONS,
    SCHEDULE_KINDS,
    SCHEDULES,
    GateKind,
    GateSource,
    LossKind,
    Param,
    ScheduleKind,
    gate_weight,
    schedule_factor,
)
from .params import CoefSchedule, Gate, Problem
from .spec import EdgeSpec
from .table import AttentionEdgeTable, EdgeTable, as_table, coef_factors, progress_of

__all__ = [
    "ATTENTION_LOSS_KINDS", "AttentionEdgeTable", "CoefSchedule", "EDGE_PARAM_COLUMNS", "EdgeSpec",
    "EdgeTable", "GATES", "GATE_COLORS", "GATE_KINDS", "Gate", "GateKind", "GateSource", "LABEL",
    "LABEL_GATE_FORMS", "LABEL_LOSSES", "LABEL_SOURCE", "LOSSES", "LOSS_KINDS", "LossKind",
    "MAX_CROPS", "PULL_NORMS", "Param", "Problem", "REDUCTIONS", "SCHEDULES", "SCHEDULE_KINDS",
    "ScheduleKind", "as_table", "coef_factors", "gate_weight", "progress_of", "schedule_factor",
]
