"""Reference (a): a graph's losses computed one edge at a time, the way public
KTG / DML training code does it.

Every node has its own logits (a separate model output).  For each destination
node we walk its incoming edges, compute one ``F.cross_entropy`` / ``F.kl_div``
per edge, evaluate the edge's gate on the host (``.item()`` checks that skip
edges whose gate lets nothing through), skip zero losses with ``loss.item()``,
and finally call ``loss_t.backward(retain_graph=True)`` once per node.

It follows the semantics of :mod:`ktgfast.edges` (KL(p_s || p_t) on
log-probabilities, ``batchmean``, T² on KL edges, gated sums divided by the
whole batch B) so that its losses can be checked against ktgfast before it is
timed; only the *style* (per-edge launches, host synchronisation, per-node
backward) is the public code's.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ktgfast.edges import GATES, EdgeSpec, GateSource, gate_weight, schedule_factor


def host_gate(spec: EdgeSpec, progress: float) -> float:
    """Scalar gates as public code computes them: a Python float per step
    (times the edge's coefficient schedule), from the table's reference;
    per-sample gates are masks (below)."""
    p = torch.tensor(progress, dtype=torch.float64)
    factor = float(schedule_factor(spec.coef_schedule.kind, spec.coef_schedule.as_dict(), p))
    if GATES[spec.gate.kind].per_sample:
        return factor
    return factor * float(gate_weight(spec.gate.kind, spec.gate.as_dict(), p, None))


def _host_mask(spec: EdgeSpec, zs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A per-sample gate's 0/1 mask, from the table's reference."""
    p = torch.zeros((), dtype=zs.dtype)
    return gate_weight(spec.gate.kind, spec.gate.as_dict(), p, GateSource(zs, labels)).float()


def per_edge_loop(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    specs: Sequence[EdgeSpec],
    progress: float,
    backward: bool = True,
) -> list:
    """Loss of every node; with ``backward`` one ``backward()`` per node.

    ``logits``: one ``(B, C)`` leaf tensor per node.  Returns the per-node
    losses (a tensor, or the Python int 0 for a node with no active edge).
    """
    batch = labels.shape[0]
    node_losses = []
    for t, zt in enumerate(logits):
        loss_t = 0
        for spec in specs:
            if spec.dst != t or GATES[spec.gate.kind].skip:
                continue
            zs = None if spec.from_label else logits[spec.src].detach()
            T = spec.T

            weight = host_gate(spec, progress)
            if weight == 0:
                continue
            mask = None
            if zs is not None and GATES[spec.gate.kind].per_sample:  # correct, threshold
                mask = _host_mask(spec, zs, labels)
                if mask.sum().item() == 0:
                    continue

            if zs is None or spec.loss == "ce":
                loss = F.cross_entropy(zt / T, labels)  # label edges always pass their gate
            elif spec.loss == "kl":
                log_q = F.log_softmax(zt / T, dim=1)
                p = F.softmax(zs / T, dim=1)
                if mask is None:
                    loss = F.kl_div(log_q, p, reduction="batchmean")
                else:
                    loss = (F.kl_div(log_q, p, reduction="none").sum(dim=1) * mask).sum() / batch
            elif spec.loss == "cos":
                per = F.cosine_similarity(F.softmax(zt / T, dim=1), F.softmax(zs / T, dim=1), dim=1)
                loss = (per if mask is None else per * mask).sum() / batch
            elif spec.loss == "pl":
                per = F.cross_entropy(zt / T, zs.argmax(dim=1), reduction="none")
                loss = (per if mask is None else per * mask).sum() / batch
            else:
                raise ValueError(f"unknown loss {spec.loss!r}")

            loss = spec.coef * weight * loss
            if loss.item() != 0:
                loss_t = loss_t + loss
        node_losses.append(loss_t)

    if backward:
        for loss_t in node_losses:
            if isinstance(loss_t, torch.Tensor):
                loss_t.backward(retain_graph=True)
    return node_losses
