"""Two PyTorch baselines of the attention-crop losses (thesis eqs. 4.8-4.9) for
``test_bench_attention_crop.py``; both follow the semantics of
:func:`ktgfast.reference.attention_crop_loss` (so their results can be checked
against ktgfast before they are timed), only their *style* differs:

(a) :func:`per_sample_loop` — the way public ensemble-KTG code does it: one
    leaf per node, a Python loop over edges and samples, the arg-max read with
    ``.item()``, each crop sliced and normalised on its own, one ``backward``
    per node.
(b) :func:`vectorised` — eager PyTorch without a loop over samples: arg-max of
    every map at once, each crop size's windows for all (edge, sample) pairs by
    index arithmetic and one ``torch.gather`` per map side, gates as (E, B)
    tensors.  (Gathering from the flat maps with one index tensor instead was
    slower here: its backward is an accumulating ``index_put_``.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ktgfast.edges import GATES, SCHEDULES, EdgeSpec, GateSource, coef_factors, gate_weight
from per_edge_loop import host_gate  # the same host-side gate as reference (a) of gated_edge_loss

_GATE_ORDER = sorted(GATES.values(), key=lambda g: g.code)


def _window(center: int, size: int, extent: int) -> tuple[int, int]:
    """start, length: shifted back inside the map, clipped when larger."""
    if size >= extent:
        return 0, extent
    return min(max(center - size // 2, 0), extent - size), size


def per_sample_loop(
    maps: Sequence[torch.Tensor],
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    specs: Sequence[EdgeSpec],
    progress: float,
    crop_sizes: Sequence[int],
    pull: str = "mean",
    backward: bool = True,
) -> list:
    """(a) Loss of every node; ``maps``: one ``(B, H, W)`` leaf per node,
    ``logits`` one ``(B, C)`` tensor per node.  Returns the per-node losses (a
    tensor, or the Python int 0 for a node with no active edge)."""
    batch, h, w = maps[0].shape
    node_losses = []
    for t, qt in enumerate(maps):
        loss_t = 0
        for spec in specs:
            if spec.dst != t or GATES[spec.gate.kind].skip:
                continue
            weight = host_gate(spec, progress)
            if weight <= 0:
                continue
            qs = maps[spec.src].detach()
            keep = None
            if GATES[spec.gate.kind].per_sample:  # correct, threshold
                mask = gate_weight(spec.gate.kind, spec.gate.as_dict(), torch.zeros(()),
                                   GateSource(logits[spec.src], labels))
                keep = (mask > 0).tolist()
            edge = 0
            for n in range(batch):
                if keep is not None and not keep[n]:
                    continue
                i, j = divmod(qs[n].argmax().item(), w)
                terms = []
                for k in crop_sizes:
                    r0, rh = _window(i, k, h)
                    c0, cw = _window(j, k, w)
                    u = F.normalize(qs[n, r0:r0 + rh, c0:c0 + cw].reshape(-1), dim=0)
                    v = F.normalize(qt[n, r0:r0 + rh, c0:c0 + cw].reshape(-1), dim=0)
                    if spec.loss == "pull":
                        sq = ((u - v) ** 2).sum()
                        terms.append(sq / u.numel() if pull == "mean" else sq)
                    else:
                        terms.append((u * v).sum())
                edge = edge + sum(terms) / len(terms)
            if isinstance(edge, torch.Tensor):
                loss_t = loss_t + spec.weight * weight * edge / batch
        node_losses.append(loss_t)
    if backward:
        for loss_t in node_losses:
            if isinstance(loss_t, torch.Tensor):
                loss_t.backward()
    return node_losses


@dataclass
class VectorTable:
    """The edge table as tensors for :func:`vectorised` (built once)."""

    src: torch.Tensor      # (E,) int64
    dst: torch.Tensor      # (E,) int64
    is_pull: torch.Tensor  # (E, 1) bool
    gate: torch.Tensor     # (E,) int64, gate codes
    coef: torch.Tensor     # (E,) weight
    params: dict           # gate parameter name -> (E, 1) column (its default where unused)
    schedule: tuple        # (codes (E,) int64, lengths (E,) float64) of the coefficient schedules

    @classmethod
    def build(cls, specs: Sequence[EdgeSpec], dtype=torch.float32, device="cpu") -> "VectorTable":
        def col(values, dt):
            return torch.tensor(values, dtype=dt, device=device)

        names = {p.name for g in GATES.values() for p in g.params}
        return cls(
            col([s.src for s in specs], torch.long), col([s.dst for s in specs], torch.long),
            col([s.loss == "pull" for s in specs], torch.bool)[:, None],
            col([GATES[s.gate.kind].code for s in specs], torch.long),
            col([s.weight for s in specs], dtype),
            {n: col([getattr(s.gate, n) for s in specs], dtype)[:, None] for n in sorted(names)},
            (col([SCHEDULES[s.coef_schedule.kind].code for s in specs], torch.long),
             col([s.coef_schedule.as_dict().get("length", 1.0) for s in specs], torch.float64)),
        )


def vectorised(
    maps: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    table: VectorTable,
    progress: torch.Tensor,
    crop_sizes: Sequence[int],
    pull: str = "mean",
) -> torch.Tensor:
    """(b) ``node_loss`` (M,) of all edges at once; ``maps`` (M, B, H, W)."""
    m, b, h, w = maps.shape
    e = table.src.numel()
    rows = maps.reshape(m, b, h * w)
    peak = rows.detach().argmax(-1)[table.src]  # (E, B) peak of every edge's source
    ci, cj = peak // w, peak % w
    src_rows = rows.detach().index_select(0, table.src)  # (E, B, H*W)
    dst_rows = rows.index_select(0, table.dst)  # backward: one index_add into the maps
    per = 0
    for k in crop_sizes:
        kh, kw = min(k, h), min(k, w)
        r0 = (ci - k // 2).clamp(0, h - kh)
        c0 = (cj - k // 2).clamp(0, w - kw)
        cells = ((r0[..., None, None] + torch.arange(kh, device=maps.device)[:, None]) * w
                 + c0[..., None, None] + torch.arange(kw, device=maps.device)).reshape(e, b, kh * kw)
        u = F.normalize(src_rows.gather(2, cells), dim=-1)
        v = F.normalize(dst_rows.gather(2, cells), dim=-1)
        sq = ((u - v) ** 2).sum(-1)
        if pull == "mean":
            sq = sq / (kh * kw)
        per = per + torch.where(table.is_pull, sq, (u * v).sum(-1))
    per = per / len(crop_sizes)
    # gates (E, B): every kind computed by the table's reference, each edge picks its own
    z = logits.detach().to(maps.dtype)
    ones = torch.ones(e, b, dtype=maps.dtype, device=maps.device)
    p = progress.to(maps.dtype)
    source = GateSource(correct=(z.argmax(-1) == labels)[table.src],
                        max_prob=F.softmax(z, -1).amax(-1)[table.src])
    kinds = torch.stack([g.weight(p, table.params, source) * ones for g in _GATE_ORDER])
    g = kinds.gather(0, table.gate[None, :, None].expand(1, e, b))[0].clamp_min(0)
    coef = table.coef * coef_factors(*table.schedule, progress).to(maps.dtype)
    edge = coef * torch.where(g > 0, g * per, torch.zeros_like(per)).sum(1) / b
    return torch.zeros(m, dtype=edge.dtype, device=edge.device).index_add(0, table.dst, edge)
