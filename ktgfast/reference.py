"""Pure-PyTorch references of every ktgfast op, written plainly (one edge at a
time, standard functional losses) so they can be read against the formulas of
the papers (``ktgfast.edges.kinds`` holds each gate's, loss's and schedule's
reference; this module walks the edges with them).  Tests compare the compiled
kernels' forward and gradient with these; they also serve as a slow fallback.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .edges import (ATTENTION_LOSS_KINDS, GATES, LOSSES, PULL_NORMS, REDUCTIONS, AttentionEdgeTable,
                    EdgeSpec, EdgeTable, GateSource, gate_weight, schedule_factor)
from .ops import EdgeLoss
from .ops.pcgrad import PCGradResult


def _specs(edges: EdgeTable | Sequence[EdgeSpec], num_slots: int) -> tuple[EdgeSpec, ...]:
    if isinstance(edges, EdgeTable):
        return edges.specs
    return tuple(e.validate(num_slots, f"edges[{i}]") for i, e in enumerate(edges))


def gate_weights(
    spec: EdgeSpec, zs: torch.Tensor | None, labels: torch.Tensor, progress: torch.Tensor
) -> torch.Tensor:
    """Per-sample gate weights ``(B,)`` of one edge (``zs`` None for the label)."""
    ones = torch.ones(labels.shape[0], dtype=progress.dtype, device=labels.device)
    source = None if zs is None else GateSource(zs, labels)
    return gate_weight(spec.gate.kind, spec.gate.as_dict(), progress, source) * ones


def coef_factor(spec: EdgeSpec, progress: torch.Tensor) -> torch.Tensor:
    """The edge's coefficient schedule at ``progress`` (a scalar tensor)."""
    return schedule_factor(spec.coef_schedule.kind, spec.coef_schedule.as_dict(), progress)


def per_sample_loss(
    spec: EdgeSpec, zt: torch.Tensor, zs: torch.Tensor | None, labels: torch.Tensor
) -> torch.Tensor:
    """Per-sample loss ``(B,)`` of one edge, before gate and coefficient."""
    if spec.loss not in LOSSES:
        raise ValueError(f"unknown loss {spec.loss!r}")
    return LOSSES[spec.loss].reference(zt, zs, labels, spec.T)


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
        if GATES[spec.gate.kind].skip:
            loss = work.new_zeros(())
        else:
            a = per_sample_loss(spec, zt, zs, labels)
            # A closed gate contributes nothing (also not 0 * inf).
            coef = spec.coef * coef_factor(spec, prog)
            loss = coef * torch.where(g > 0, g * a, torch.zeros_like(a)).sum() / div
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


# --------------------------------------------------------------------------
# attention_crop_loss (thesis eqs. 4.8-4.9)

def crop_window(center: int, size: int, extent: int) -> tuple[int, int]:
    """``(start, length)`` of a ``size``-cell window centred at ``center`` on an
    axis of ``extent`` cells.  The window starts at ``center - size // 2``; one
    that would leave the map is shifted back inside it, and one larger than the
    map is clipped to the whole axis (the thesis leaves borders open)."""
    if size >= extent:
        return 0, extent
    return min(max(center - size // 2, 0), extent - size), size


def attention_crop_terms(
    src_map: torch.Tensor, dst_map: torch.Tensor, crop_sizes: Sequence[int], loss: str, pull: str = "mean"
) -> torch.Tensor:
    """Per-sample loss (before gate and coefficient) of one attention edge for
    one sample: ``src_map`` and ``dst_map`` are ``(H, W)``."""
    if loss not in ATTENTION_LOSS_KINDS:
        raise ValueError(f"unknown attention loss {loss!r}; allowed: {', '.join(ATTENTION_LOSS_KINDS)}")
    term = LOSSES[loss].reference
    h, w = src_map.shape
    # torch.argmax returns the first maximal index: ties go to the smallest
    # row-major position.
    flat = int(torch.argmax(src_map.reshape(-1)))
    ci, cj = divmod(flat, w)
    terms = []
    for k in crop_sizes:
        r0, rh = crop_window(ci, k, h)
        c0, cw = crop_window(cj, k, w)
        u = F.normalize(src_map[r0:r0 + rh, c0:c0 + cw].reshape(-1), dim=0)
        v = F.normalize(dst_map[r0:r0 + rh, c0:c0 + cw].reshape(-1), dim=0)
        terms.append(term(u, v, pull == "mean"))
    return torch.stack(terms).mean()


def attention_crop_loss(
    maps: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    edges,
    progress: float | torch.Tensor = 0.0,
    crop_sizes: Sequence[int] = (3, 5, 7),
    reduction: str = "mean",
    pull: str = "mean",
) -> EdgeLoss:
    """Reference of :func:`ktgfast.ops.attention_crop_loss`.

    ``maps`` ``(M, B, H, W)`` attention maps of all slots; ``logits`` ``(M, B, C)``
    (only read by the correct / threshold gates); ``edges`` an
    :class:`~ktgfast.edges.AttentionEdgeTable` or specs with ``loss`` pull/push.
    Gradient flows only into each edge's destination map.
    """
    m, b, _, _ = maps.shape
    specs = edges.specs if isinstance(edges, AttentionEdgeTable) else tuple(
        AttentionEdgeTable(edges, m).specs
    )
    if pull not in PULL_NORMS:
        raise ValueError(f"unknown pull normalisation {pull!r}; allowed: {', '.join(PULL_NORMS)}")
    work = maps if maps.dtype == torch.float64 else maps.float()
    zwork = logits.detach().to(work.dtype)
    prog = torch.as_tensor(progress, dtype=work.dtype, device=maps.device).reshape(())
    div = b if REDUCTIONS[reduction] == 0 else 1
    edge_losses, counts = [], []
    node_loss = work.new_zeros(m)
    for spec in specs:
        g = gate_weights(spec, zwork[spec.src], labels, prog)
        if GATES[spec.gate.kind].skip:
            loss = work.new_zeros(())
        else:
            src = work[spec.src].detach()
            a = torch.stack([
                attention_crop_terms(src[n], work[spec.dst, n], crop_sizes, spec.loss, pull) for n in range(b)
            ]) if b else work.new_zeros(0)
            coef = spec.weight * coef_factor(spec, prog)
            loss = coef * torch.where(g > 0, g * a, torch.zeros_like(a)).sum() / div
        edge_losses.append(loss)
        counts.append((g > 0).sum())
        node_loss = node_loss + F.one_hot(torch.tensor(spec.dst), m).to(work) * loss
    if edge_losses:
        edge_loss, count = torch.stack(edge_losses), torch.stack(counts).long()
    else:
        edge_loss = work.new_zeros(0)
        count = torch.zeros(0, dtype=torch.long, device=maps.device)
    return EdgeLoss(edge_loss, node_loss, count)


# --------------------------------------------------------------------------
# pcgrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Alg. 1)


def pcgrad(
    grads: torch.Tensor | Sequence[torch.Tensor],
    order: torch.Tensor,
    reduction: str = "sum",
):
    """A literal transcription of PCGrad: for every task ``i`` take a copy of
    ``g_i``; for every other task ``j`` in ``order[i]``, if the (already
    projected) ``g_i`` conflicts with the *original* ``g_j`` (negative dot),
    remove its component along ``g_j``.  The update is the sum (or mean) of
    the projected gradients.

    ``grads``: ``(K, P)``, or a list of per-parameter tensors ``(K, *shape)``.
    ``order``: ``(K, K-1)`` int64, row ``i`` a permutation of the other tasks
    (see :func:`ktgfast.ops.pcgrad_order`).  ``conflicts[i, j]`` is 1 where the
    original gradients conflict, ``g_i · g_j < 0`` (symmetric, zero diagonal;
    summed over steps it gives the per-pair counts of thesis tables 4.10-4.11).
    """
    as_list = not isinstance(grads, torch.Tensor)
    parts = list(grads) if as_list else [grads]
    k = parts[0].shape[0]
    flat = torch.cat([p.reshape(k, -1) for p in parts], dim=1)
    projected = []
    for i in range(k):
        gi = flat[i].clone()
        for j in order[i].tolist():
            dot = torch.dot(gi, flat[j])
            if dot < 0:
                gi = gi - dot / torch.dot(flat[j], flat[j]) * flat[j]
        projected.append(gi)
    update = torch.stack(projected).sum(0)
    if reduction == "mean":
        update = update / k
    elif reduction != "sum":
        raise ValueError(f"unknown reduction {reduction!r}; allowed: sum, mean")
    gram = flat @ flat.T
    conflicts = ((gram < 0) & ~torch.eye(k, dtype=torch.bool, device=flat.device)).long()
    if not as_list:
        return PCGradResult(update, conflicts)
    out, start = [], 0
    for p in parts:
        n = p[0].numel()
        out.append(update[start:start + n].reshape(p.shape[1:]))
        start += n
    return PCGradResult(out, conflicts)
