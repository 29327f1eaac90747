"""``gated_edge_loss``: the fused edge loss of a knowledge-transfer graph, its
fake (meta) kernel and autograd.  The schema lives in
``csrc/gated_edge_loss_schema.cpp``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from ..edges import REDUCTIONS, EdgeSpec, EdgeTable, as_table
from ._extension import _C, require_extension as _require_extension

class EdgeLoss(NamedTuple):
    edge_loss: torch.Tensor  # (E,) reduced loss of every edge (0 for cutoff edges)
    node_loss: torch.Tensor  # (M,) sum of the incoming edges' losses per destination
    count: torch.Tensor      # (E,) int64: samples whose gate weight was > 0


def _loss_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _progress_tensor(progress, device) -> torch.Tensor:
    if isinstance(progress, torch.Tensor):
        if progress.numel() != 1:
            raise ValueError(f"progress must be a scalar (k / k_end), got shape {tuple(progress.shape)}")
        return progress.reshape(()).to(device=device, dtype=torch.float64)
    return torch.tensor(float(progress), dtype=torch.float64, device=device)


def gated_edge_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    edges: EdgeTable | Sequence[EdgeSpec],
    progress: float | torch.Tensor = 0.0,
    reduction: str = "mean",
) -> EdgeLoss:
    """Every edge of a knowledge-transfer graph for one batch, in one call.

    Args:
        logits: ``(M, B, C)`` logits of all slots (fp32 / fp64 / fp16 / bf16,
            any strides).  Sources are detached: gradient flows only into each
            edge's destination.
        labels: ``(B,)`` int64 class labels.
        edges: an :class:`EdgeTable` (build once, keep on the device) or specs.
        progress: ``k / k_end`` in [0, 1] as a float or a device scalar tensor
            (a tensor keeps the call free of host synchronisation).  The gates
            and the edges' coefficient schedules are evaluated from it.
        reduction: ``"mean"`` over the batch (default) or ``"sum"``.

    The gradient of ``node_loss.sum()`` is computed in the forward pass, so the
    backward of the usual ``node_loss.sum().backward()`` is one scaling.
    """
    _require_extension()
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; allowed: {', '.join(REDUCTIONS)}")
    if logits.dim() != 3:
        raise ValueError(f"logits must be (M, B, C), got shape {tuple(logits.shape)}")
    table = as_table(edges, logits.shape[0], logits.device)
    prog = _progress_tensor(progress, logits.device)
    # The table owns the packing; coefficient schedules scale the coef column
    # here, on the device (tables without one pass their params unchanged).
    edge_loss, node_loss, count, _ = torch.ops.ktgfast.gated_edge_loss(
        logits, labels, table.edge_index, table.params_at(prog), prog, REDUCTIONS[reduction]
    )
    return EdgeLoss(edge_loss, node_loss, count)


def _fake_forward(logits, labels, edge_index, edge_params, progress, reduction):
    m, b, c = logits.shape
    e = edge_index.shape[0]
    ldt = _loss_dtype(logits.dtype)
    return (
        logits.new_empty((e,), dtype=ldt),
        logits.new_empty((m,), dtype=ldt),
        logits.new_empty((e,), dtype=torch.long),
        logits.new_empty((m, b, c)),
    )


def _fake_backward(grad_edge, logits, labels, edge_index, edge_params, progress, reduction):
    return logits.new_empty(logits.shape)


def _setup_context(ctx, inputs, output):
    logits, labels, edge_index, edge_params, progress, reduction = inputs
    _, _, count, grad = output
    ctx.save_for_backward(logits, labels, edge_index, edge_params, progress, grad)
    ctx.reduction = reduction
    ctx.mark_non_differentiable(count, grad)
    # Unused outputs arrive as None, so the usual node_loss.sum() takes the
    # cheap path below instead of a recompute.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_edge, grad_node, grad_count=None, grad_grad=None):
    logits, labels, edge_index, edge_params, progress, grad = ctx.saved_tensors
    if not ctx.needs_input_grad[0] or (grad_edge is None and grad_node is None):
        return None, None, None, None, None, None
    if grad_edge is None:
        # d(sum_t w_t L_t)/dz_t = w_t * d L_t/dz_t: the saved gradient, scaled.
        out = grad * grad_node.to(grad.dtype)[:, None, None]
    else:
        w = grad_edge
        if grad_node is not None:
            w = w + grad_node[edge_index[:, 1].long()]
        out = torch.ops.ktgfast.gated_edge_loss_backward(
            w, logits, labels, edge_index, edge_params, progress, ctx.reduction
        )
    return out, None, None, None, None, None


def _register() -> None:
    torch.library.register_fake("ktgfast::gated_edge_loss")(_fake_forward)
    torch.library.register_fake("ktgfast::gated_edge_loss_backward")(_fake_backward)
    torch.library.register_autograd(
        "ktgfast::gated_edge_loss", _backward, setup_context=_setup_context
    )


if _C is not None:
    _register()
