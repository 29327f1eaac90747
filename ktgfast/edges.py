"""The edge table of the fused edge-loss op: what each edge computes, validated
once on the host and packed into two small tensors that live on the device.

An *edge* carries knowledge from a source (a logit slot, or the label) to a
destination slot.  Slots are usually model nodes; for semi-supervised graphs a
node's outputs on two views are two slots, so consistency and pseudo-label edges
are ordinary edges between slots.

Loss kinds (per sample, before gate and weight):

=========  ================================================================
``kl``     ``KL(p_s || p_t)`` with ``p = softmax(z / T)``; multiplied by ``T²``
           when ``t2`` is true (Hinton).  From the label it equals ``ce``
           (a one-hot has zero entropy, thesis eq. 3.1).
``ce``     cross-entropy of ``softmax(z_t / T)`` to the label (label edges).
``cos``    cosine similarity of ``p_s`` and ``p_t`` (the "push" of thesis
           eq. 4.7; minimising it pushes the distributions apart).
``pl``     cross-entropy to the one-hot of the source's arg-max (pseudo-label).
=========  ================================================================

Attention-map edges (:class:`AttentionEdgeTable`, op ``attention_crop_loss``):
square crops of several sizes centred at the arg-max of the *source* map, the
destination cropped at the same place, each crop L2-normalised:

=========  ================================================================
``pull``   mean over crops of the squared error of the normalised crops
           (eq. 4.8); divided by the crop's element count ``d`` by default
           (a *mean* squared error, as the thesis names it) or summed.
``push``   mean over crops of the cosine of the crops (eq. 4.9), minimised.
=========  ================================================================

Gates (per-sample weight, ``progress = k / k_end`` in [0, 1]):

==============  ============================================================
``through``     1
``cutoff``      0; the edge is skipped entirely (no compute)
``linear``      ``progress``
``neg_linear``  ``1 - progress``
``correct``     1 if the source's arg-max equals the label, else 0 (label
                edge: 1).  The masked sum is divided by the whole batch ``B``
                (not by the number of passing samples), as in the thesis.
``sine``        ``0.5 + 0.5 sin(2π f progress + φ)``
``threshold``   1 if ``max softmax(z_s)`` (at T = 1) ``> tau``, else 0 (label
                edge: 1); FixMatch's mask, also divided by the whole ``B``.
==============  ============================================================

The batch reduction is ``mean`` (divide by ``B``, the default) or ``sum`` (the
thesis's eq. 3.2 as written).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

LABEL = "label"
LOSS_KINDS = {"kl": 0, "ce": 1, "cos": 2, "pl": 3}
GATE_KINDS = {
    "through": 0,
    "cutoff": 1,
    "linear": 2,
    "neg_linear": 3,
    "correct": 4,
    "sine": 5,
    "threshold": 6,
}
REDUCTIONS = {"mean": 0, "sum": 1}
LABEL_SOURCE = -1
LABEL_LOSSES = ("kl", "ce")  # what an edge from the label may compute
# Attention-map edges (thesis eqs. 4.8-4.9), computed by attention_crop_loss.
ATTENTION_LOSS_KINDS = {"pull": 0, "push": 1}


def _choice(value: str, allowed: dict, what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class EdgeSpec:
    """One edge.  ``src`` is a slot index or ``"label"``; ``dst`` a slot index.

    ``f`` and ``phi`` parametrise the sine gate, ``tau`` the threshold gate.
    """

    src: int | str
    dst: int
    loss: str = "kl"
    gate: str = "through"
    T: float = 1.0
    weight: float = 1.0
    t2: bool = True
    f: float = 0.0
    phi: float = 0.0
    tau: float = 0.95

    @property
    def from_label(self) -> bool:
        return self.src == LABEL

    @property
    def coef(self) -> float:
        """The constant factor of the edge: weight, times T² for scaled KL."""
        return self.weight * (self.T**2 if self.loss == "kl" and self.t2 else 1.0)

    def validate(self, num_slots: int, where: str = "edge", losses: dict = LOSS_KINDS) -> "EdgeSpec":
        _choice(self.loss, losses, f"{where}.loss")
        _choice(self.gate, GATE_KINDS, f"{where}.gate")
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
        if not self.from_label and self.loss == "ce":
            raise ValueError(f"{where}: loss 'ce' is the label edge's loss; from a node use kl, cos or pl")
        if not (math.isfinite(self.T) and self.T > 0):
            raise ValueError(f"{where}.T = {self.T!r}; the temperature must be a finite number > 0")
        if not math.isfinite(self.weight):
            raise ValueError(f"{where}.weight = {self.weight!r}; it must be finite")
        if not (math.isfinite(self.f) and math.isfinite(self.phi)):
            raise ValueError(f"{where}: sine gate parameters must be finite, got f={self.f}, phi={self.phi}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"{where}.tau = {self.tau!r}; a probability threshold must be in [0, 1]")
        return self

    def gate_params(self) -> tuple[float, float]:
        if self.gate == "sine":
            return float(self.f), float(self.phi)
        if self.gate == "threshold":
            return float(self.tau), 0.0
        return 0.0, 0.0


class EdgeTable:
    """Validated edges packed for the op: ``edge_index`` int32 ``(E, 4)`` =
    [src (-1 = label), dst, loss, gate] and ``edge_params`` float64 ``(E, 4)`` =
    [T, coef, gate_a, gate_b].  Build once per graph; move with ``.to(device)``."""

    LOSSES = LOSS_KINDS

    def __init__(self, edges: Iterable[EdgeSpec], num_slots: int, device: torch.device | str = "cpu"):
        if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"num_slots must be a positive int, got {num_slots!r}")
        self.specs: tuple[EdgeSpec, ...] = tuple(
            e.validate(num_slots, f"edges[{i}]", self.LOSSES) for i, e in enumerate(edges)
        )
        self.num_slots = num_slots
        rows = [
            [LABEL_SOURCE if e.from_label else e.src, e.dst, self.LOSSES[e.loss], GATE_KINDS[e.gate]]
            for e in self.specs
        ]
        params = [[e.T, e.coef, *e.gate_params()] for e in self.specs]
        self.edge_index = torch.tensor(rows, dtype=torch.int32).reshape(-1, 4).to(device)
        self.edge_params = torch.tensor(params, dtype=torch.float64).reshape(-1, 4).to(device)

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    def to(self, device) -> "EdgeTable":
        out = object.__new__(type(self))
        out.specs, out.num_slots = self.specs, self.num_slots
        out.edge_index = self.edge_index.to(device)
        out.edge_params = self.edge_params.to(device)
        return out

    def destinations(self) -> torch.Tensor:
        return self.edge_index[:, 1].long()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} edges, {self.num_slots} slots, {self.device})"


class AttentionEdgeTable(EdgeTable):
    """Edges between attention maps for :func:`ktgfast.ops.attention_crop_loss`:
    ``loss`` is ``pull`` (eq. 4.8) or ``push`` (eq. 4.9), ``src`` a node (never
    the label), any gate; ``T`` and ``t2`` are unused (``coef`` = ``weight``).
    Same packing as :class:`EdgeTable`."""

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
    """``k / k_end`` such that the last step (k = total_steps - 1) is exactly 1:
    Linear gates must reach weight 1 at the last step (DESIGN pitfall 6)."""
    if total_steps <= 1:
        return 1.0
    return min(max(step / (total_steps - 1), 0.0), 1.0)
