"""Pure-PyTorch references of every ktgfast op, written plainly (one edge at a
time, standard functional losses) so they can be read against the SPEC.  Tests
compare the compiled kernels' forward and gradient with these; they also serve
as a slow fallback.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .edges import REDUCTIONS, EdgeSpec, EdgeTable
from .ops import EdgeLoss


def _specs(edges: EdgeTable | Sequence[EdgeSpec], num_slots: int) -> tuple[EdgeSpec, ...]:
    if isinstance(edges, EdgeTable):
        return edges.specs
    return tuple(e.validate(num_slots, f"edges[{i}]") for i, e in enumerate(edges))


def gate_weights(
    spec: EdgeSpec, zs: torch.Tensor | None, labels: torch.Tensor, progress: torch.Tensor
) -> torch.Tensor:
    """Per-sample gate weights ``(B,)`` of one edge (``zs`` None for the label)."""
    b = labels.shape[0]
    dtype = progress.dtype
    ones = torch.ones(b, dtype=dtype, device=labels.device)
    if spec.gate == "through":
        return ones
    if spec.gate == "cutoff":
        return torch.zeros_like(ones)
    if spec.gate == "linear":
        return progress * ones
    if spec.gate == "neg_linear":
        return (1 - progress) * ones
    if spec.gate == "sine":
        return (0.5 + 0.5 * torch.sin(2 * math.pi * spec.f * progress + spec.phi)) * ones
    if zs is None:  # correct / threshold from the label always pass
        return ones
    if spec.gate == "correct":
        return (zs.argmax(-1) == labels).to(dtype)
    if spec.gate == "threshold":
        return (F.softmax(zs, -1).amax(-1) > spec.tau).to(dtype)
    raise ValueError(f"unknown gate {spec.gate!r}")


def per_sample_loss(
    spec: EdgeSpec, zt: torch.Tensor, zs: torch.Tensor | None, labels: torch.Tensor
) -> torch.Tensor:
    """Per-sample loss ``(B,)`` of one edge, before gate and coefficient."""
    T = spec.T
    if zs is None or spec.loss == "ce":
        return F.cross_entropy(zt / T, labels, reduction="none")
    if spec.loss == "kl":
        return F.kl_div(F.log_softmax(zt / T, -1), F.softmax(zs / T, -1), reduction="none").sum(-1)
    if spec.loss == "cos":
        return F.cosine_similarity(F.softmax(zt / T, -1), F.softmax(zs / T, -1), dim=-1)
    if spec.loss == "pl":
        return F.cross_entropy(zt / T, zs.argmax(-1), reduction="none")
    raise ValueError(f"unknown loss {spec.loss!r}")


def gated_edge_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    edges: EdgeTable | Sequence[EdgeSpec],
    progress: float | torch.Tensor = 0.0,
    reduction: str = "mean",
) -> EdgeLoss:
    """Reference of :func:`ktgfast.ops.gated_edge_loss` (same arguments)."""
    m, b, _ = logits.shape
    work = logits if logits.dtype == torch.float64 else logits.float()
    prog = torch.as_tensor(progress, dtype=work.dtype, device=logits.device).reshape(())
    div = b if REDUCTIONS[reduction] == 0 else 1
    edge_losses, counts = [], []
    node_loss = work.new_zeros(m)
    for spec in _specs(edges, m):
        zt = work[spec.dst]
        zs = None if spec.from_label else work[spec.src].detach()
        g = gate_weights(spec, zs, labels, prog)
        if spec.gate == "cutoff":
            loss = work.new_zeros(())
        else:
            a = per_sample_loss(spec, zt, zs, labels)
            # A closed gate contributes nothing (also not 0 * inf).
            loss = spec.coef * torch.where(g > 0, g * a, torch.zeros_like(a)).sum() / div
        edge_losses.append(loss)
        counts.append((g > 0).sum())
        node_loss = node_loss + F.one_hot(torch.tensor(spec.dst), m).to(work) * loss
    if edge_losses:
        edge_loss = torch.stack(edge_losses)
        count = torch.stack(counts).long()
    else:
        edge_loss = work.new_zeros(0)
        count = torch.zeros(0, dtype=torch.long, device=logits.device)
    return EdgeLoss(edge_loss, node_loss, count)
