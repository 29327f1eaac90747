"""The edge losses of a mixup batch (``ktgfast.data.mixup``).

The fused op takes one integer label per sample, but a mixed sample's target
is ``λ·onehot(y_i) + (1 − λ)·onehot(y_j)`` with a λ per sample.  Cross-entropy
is linear in the target, so a label edge's per-sample loss is

    λ·CE(z_t / T, y_i) + (1 − λ)·CE(z_t / T, y_j)

(the soft-target cross-entropy), times the edge's gate weight and
coefficient (weight, and T² for a ``kl`` edge with ``t2``) and reduced like
the op (mean over the batch or sum).  Label edges are computed here in plain
PyTorch, all in one batched expression; every node-to-node edge (peers on the
same mixed images) stays in the fused op.

Gates of label edges depend only on training progress ``p`` (``correct`` and
``threshold`` pass everything from the label), so each is
``a + b·p + c·sin(2π·f·p + φ)`` with constants per gate (``LABEL_GATE_FORMS``,
from the table of edge kinds).  An edge's coefficient schedule applies as in
the op.
Peer edges with a ``correct`` gate compare the source's arg-max with the
*dominant* label of each mixed sample (the one with λ ≥ ½; the sample's own
label at exactly ½); the attention edges' gates do the same.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch

from ..edges.kinds import GATES
from ..edges import LABEL_GATE_FORMS, REDUCTIONS, EdgeSpec, EdgeTable
from ..ops import gated_edge_loss

if TYPE_CHECKING:  # importing ktgfast.data is deferred until a run needs it
    from ..data.mixup import MixedTargets

class MixedTargetEdges:
    """``edges(logits, targets, progress, reduction)`` -> ``(S,)`` loss per
    slot, like ``gated_edge_loss(...).node_loss`` but for :class:`MixedTargets`.
    Built once per graph from the trainer's edge specs; cutoff label edges
    cost nothing."""

    def __init__(self, specs: Sequence[EdgeSpec], num_slots: int, device):
        specs = list(specs)
        peers = [e for e in specs if not e.from_label]
        labels = [e for e in specs if e.from_label and not GATES[e.gate.kind].skip]
        for e in labels:
            if e.gate not in LABEL_GATE_FORMS:
                raise ValueError(f"label edge into slot {e.dst}: gate {e.gate!r} has no mixup "
                                 f"form; allowed: {', '.join(LABEL_GATE_FORMS)}, cutoff")
        self.num_slots = num_slots
        self.peer_table = EdgeTable(peers, num_slots, device) if peers else None
        f64 = dict(dtype=torch.float64, device=device)
        self.dst = torch.tensor([e.dst for e in labels], dtype=torch.long, device=device)
        self.inv_T = torch.tensor([1.0 / e.T for e in labels], **f64)
        # The label edges' packed coefficients, scaled by their schedules per step.
        self.label_table = EdgeTable(labels, num_slots, device) if labels else None
        forms = torch.tensor([LABEL_GATE_FORMS[e.gate] for e in labels], **f64).reshape(-1, 3)
        self.gate_a, self.gate_b, self.gate_c = forms.unbind(1)
        self.omega = torch.tensor([2 * math.pi * e.f for e in labels], **f64)
        self.phi = torch.tensor([e.phi for e in labels], **f64)

    def label_gates(self, progress: torch.Tensor) -> torch.Tensor:
        """``(L,)`` gate weights of the label edges at ``progress`` (float64)."""
        return self.gate_a + self.gate_b * progress + \
            self.gate_c * torch.sin(self.omega * progress + self.phi)

    def label_losses(self, logits: torch.Tensor, targets: "MixedTargets", progress: torch.Tensor,
                     reduction: str) -> torch.Tensor:
        """``(L,)`` reduced loss of every (non-cutoff) label edge."""
        work = logits if logits.dtype == torch.float64 else logits.float()
        z = work.index_select(0, self.dst) * self.inv_T.to(work.dtype)[:, None, None]
        logp = z.log_softmax(-1)                                       # (L, B, C)
        n_edges = len(self.dst)

        def at(y):
            return logp.gather(-1, y.view(1, -1, 1).expand(n_edges, -1, 1)).squeeze(-1)

        lam = targets.lam.to(work.dtype)
        per_sample = -(lam * at(targets.labels) + (1 - lam) * at(targets.partner))  # (L, B)
        div = logits.shape[1] if REDUCTIONS[reduction] == 0 else 1
        gate = self.label_gates(progress).to(work.dtype)
        coef = self.label_table.params_at(progress)[:, 1]
        scale = (coef.to(work.dtype) * gate) / div
        # a closed gate contributes nothing (also not 0 * inf), as in the op
        return torch.where(gate > 0, scale * per_sample.sum(1), torch.zeros_like(scale))

    def __call__(self, logits: torch.Tensor, targets: "MixedTargets", progress: torch.Tensor,
                 reduction: str = "mean") -> torch.Tensor:
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        progress = torch.as_tensor(progress, dtype=torch.float64, device=logits.device).reshape(())
        slot_loss = torch.zeros(self.num_slots, dtype=dtype, device=logits.device)
        if self.peer_table is not None:
            slot_loss = slot_loss + gated_edge_loss(logits, targets.dominant, self.peer_table,
                                                    progress, reduction).node_loss
        if len(self.dst):
            slot_loss = slot_loss.index_add(0, self.dst, self.label_losses(logits, targets, progress,
                                                                            reduction))
        return slot_loss


__all__ = ["LABEL_GATE_FORMS", "MixedTargetEdges"]  # LABEL_GATE_FORMS: re-exported
