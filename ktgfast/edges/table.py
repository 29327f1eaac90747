"""Edge tables: validated edges packed once into the small device tensors the
fused ops read, and the per-step coefficient schedule applied to them."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .kinds import ATTENTION_LOSS_KINDS, GATE_KINDS, LABEL_SOURCE, LOSS_KINDS, SCHEDULES
from .spec import EdgeSpec

_SCHEDULE_ORDER = tuple(sorted(SCHEDULES.values(), key=lambda s: s.code))
assert [s.code for s in _SCHEDULE_ORDER] == list(range(len(_SCHEDULE_ORDER)))


def coef_factors(codes: torch.Tensor, lengths: torch.Tensor, progress: torch.Tensor) -> torch.Tensor:
    """``(E,)`` schedule factors at ``progress`` (clamped to [0, 1]) for
    schedule ``codes`` (int64) and ``lengths`` (float64; 1 where a schedule has
    none): every kind evaluated on the tiny ``(E,)`` vector, each edge picks its
    own.  Pure tensor ops on the tables' device: no host synchronisation."""
    p = progress.to(lengths.dtype).clamp(0.0, 1.0)
    every = torch.stack([torch.broadcast_to(s.factor(p, lengths), lengths.shape) for s in _SCHEDULE_ORDER])
    return every.gather(0, codes[None]).squeeze(0)


class EdgeTable:
    """Validated edges packed for the op: ``edge_index`` int32 ``(E, 4)`` =
    [src (-1 = label), dst, loss, gate] and ``edge_params`` float64 ``(E, 4)`` =
    [T, coef, gate_a, gate_b].  Build once per graph; move with ``.to(device)``.

    Edges with a coefficient schedule also get ``schedule`` = (codes int64
    ``(E,)``, lengths float64 ``(E,)``); :meth:`params_at` gives the parameters
    of one step.  Tables without a schedule have ``schedule`` None and cost
    nothing extra."""

    LOSSES = LOSS_KINDS

    def __init__(self, edges: Iterable[EdgeSpec], num_slots: int, device: torch.device | str = "cpu"):
        if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"num_slots must be a positive int, got {num_slots!r}")
        self.specs: tuple[EdgeSpec, ...] = tuple(
            e.validate(num_slots, f"edges[{i}]", self.LOSSES) for i, e in enumerate(edges)
        )
        self.num_slots = num_slots
        rows = [
            [LABEL_SOURCE if e.from_label else e.src, e.dst, self.LOSSES[e.loss], GATE_KINDS[e.gate.kind]]
            for e in self.specs
        ]
        params = [[e.T, e.coef, *e.gate.pack()] for e in self.specs]
        self.edge_index = torch.tensor(rows, dtype=torch.int32).reshape(-1, 4).to(device)
        self.edge_params = torch.tensor(params, dtype=torch.float64).reshape(-1, 4).to(device)
        self.schedule: tuple[torch.Tensor, torch.Tensor] | None = None
        if any(e.coef_schedule.kind != "none" for e in self.specs):
            codes = [SCHEDULES[e.coef_schedule.kind].code for e in self.specs]
            lengths = [float(e.coef_schedule.as_dict().get("length", 1.0)) for e in self.specs]
            self.schedule = (torch.tensor(codes, dtype=torch.long, device=device),
                             torch.tensor(lengths, dtype=torch.float64, device=device))

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    def params_at(self, progress: torch.Tensor) -> torch.Tensor:
        """``edge_params`` of the step at ``progress`` (a device scalar): the
        coefficient column times each edge's schedule factor."""
        if self.schedule is None:
            return self.edge_params
        factor = coef_factors(*self.schedule, progress)
        p = self.edge_params
        return torch.cat([p[:, :1], p[:, 1:2] * factor[:, None], p[:, 2:]], dim=1)

    def to(self, device) -> "EdgeTable":
        out = object.__new__(type(self))
        out.specs, out.num_slots = self.specs, self.num_slots
        out.edge_index = self.edge_index.to(device)
        out.edge_params = self.edge_params.to(device)
        out.schedule = None if self.schedule is None else tuple(t.to(device) for t in self.schedule)
        return out

    def destinations(self) -> torch.Tensor:
        return self.edge_index[:, 1].long()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} edges, {self.num_slots} slots, {self.device})"


class AttentionEdgeTable(EdgeTable):
    """Edges between attention maps for :func:`ktgfast.ops.attention_crop_loss`:
    ``loss`` is ``pull`` or ``push`` (the thesis's eqs. 4.8-4.9), ``src`` a node
    (never the label), any gate; ``T`` and ``t2`` are unused (``coef`` =
    ``weight``).  Same packing as :class:`EdgeTable`."""

    LOSSES = ATTENTION_LOSS_KINDS


def as_table(edges: EdgeTable | Sequence[EdgeSpec], num_slots: int, device, kind: type = EdgeTable) -> EdgeTable:
    """A table of class ``kind`` on ``device`` from a table or a list of specs."""
    if isinstance(edges, EdgeTable):
        if not isinstance(edges, kind):
            raise TypeError(f"expected a {kind.__name__}, got a {type(edges).__name__}")
        if edges.num_slots != num_slots:
            raise ValueError(
                f"edge table was built for {edges.num_slots} nodes but logits have {num_slots}"
            )
        return edges if edges.device == torch.device(device) else edges.to(device)
    return kind(edges, num_slots, device)


def progress_of(step: int, total_steps: int) -> float:
    """``k / k_end`` such that the last step (k = total_steps - 1) is exactly 1,
    so that a linear gate (``k / k_end``, the thesis's eqs. 3.4-3.8) reaches
    weight 1 at the end of the run."""
    if total_steps <= 1:
        return 1.0
    return min(max(step / (total_steps - 1), 0.0), 1.0)
