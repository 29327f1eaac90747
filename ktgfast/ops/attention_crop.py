"""``attention_crop_loss``: the attention-map losses of thesis eqs. 4.8-4.9 for
every attention edge of a graph in one call, its fake (meta) kernels and
autograd.  The schemas live in ``csrc/attention_crop_schema.cpp``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..edges import MAX_CROPS, PULL_NORMS, REDUCTIONS, AttentionEdgeTable, EdgeSpec, as_table
from ._extension import _C, require_extension as _require_extension
from .gated_edge_loss import EdgeLoss, _loss_dtype, _progress_tensor

# PULL_NORMS: how a pull term is normalised over a crop's d cells; "mean"
# divides the squared error by d (the thesis's eq. 4.8, a mean squared error).


def _crop_sizes(crop_sizes: Sequence[int]) -> list[int]:
    try:
        sizes = list(crop_sizes)
    except TypeError:
        raise ValueError(f"crop_sizes must be a sequence of positive ints, got {crop_sizes!r}") from None
    if not sizes or len(sizes) > MAX_CROPS:
        raise ValueError(f"crop_sizes must hold 1 to {MAX_CROPS} sizes, got {crop_sizes!r}")
    for k in sizes:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"crop size {k!r} is not allowed; crop sizes must be positive ints, "
                             f"got {crop_sizes!r}")
    return sizes


def attention_crop_loss(
    maps: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    edges: AttentionEdgeTable | Sequence[EdgeSpec],
    progress: float | torch.Tensor = 0.0,
    crop_sizes: Sequence[int] = (3, 5, 7),
    reduction: str = "mean",
    pull: str = "mean",
) -> EdgeLoss:
    """Every attention edge of a knowledge-transfer graph for one batch, in one call.

    Per edge and sample: square crops of each size in ``crop_sizes``, centred
    at the first arg-max of the *source* map (shifted back inside the map at
    its borders, clipped to the map when larger), the destination cropped at
    the same window; each crop L2-normalised.  ``pull`` = mean over crops of
    the squared error of the normalised crops (divided by the crop's cell count
    when ``pull="mean"``, summed when ``"sum"``); ``push`` = mean over crops of
    their cosine.  Gated and weighted like :func:`gated_edge_loss`.

    Args:
        maps: ``(M, B, H, W)`` attention maps of all slots (fp32 / fp64 / fp16 /
            bf16, any strides).  Sources are detached: gradient flows only into
            each edge's destination map.
        logits: ``(M, B, C)`` logits of the slots; read (at the maps' precision)
            by the correct and threshold gates of an edge's source only, never
            differentiated.
        labels: ``(B,)`` int64 class labels (for the correct gate).
        edges: an :class:`AttentionEdgeTable` (build once, keep on the device)
            or specs with ``loss`` ``"pull"`` or ``"push"``.
        progress: ``k / k_end`` in [0, 1] as a float or a device scalar tensor
            (a tensor keeps the call free of host synchronisation); gates and
            coefficient schedules are evaluated from it.
        crop_sizes: the square crop sizes (ResNet (3, 5, 7), ABN (3, 7, 11)).
        reduction: ``"mean"`` over the batch (default) or ``"sum"``.
        pull: ``"mean"`` (default) or ``"sum"`` over a crop's cells.

    Returns :class:`EdgeLoss` (edge_loss (E,), node_loss (M,), count (E,)).  The
    gradient of ``node_loss.sum()`` is computed in the forward pass.
    """
    _require_extension()
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; allowed: {', '.join(REDUCTIONS)}")
    if pull not in PULL_NORMS:
        raise ValueError(f"unknown pull normalisation {pull!r}; allowed: {', '.join(PULL_NORMS)}")
    sizes = _crop_sizes(crop_sizes)
    if maps.dim() != 4:
        raise ValueError(f"maps must be (M, B, H, W), got shape {tuple(maps.shape)}")
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(maps.shape[:2]):
        raise ValueError(
            f"logits must be (M, B, C) with (M, B) = {tuple(maps.shape[:2])} from maps, "
            f"got shape {tuple(logits.shape)}"
        )
    table = as_table(edges, maps.shape[0], maps.device, kind=AttentionEdgeTable)
    prog = _progress_tensor(progress, maps.device)
    edge_loss, node_loss, count, _ = torch.ops.ktgfast.attention_crop_loss(
        maps, logits, labels, table.edge_index, table.params_at(prog), prog, sizes,
        REDUCTIONS[reduction], PULL_NORMS[pull],
    )
    return EdgeLoss(edge_loss, node_loss, count)


def _fake_forward(maps, logits, labels, edge_index, edge_params, progress, crop_sizes, reduction,
                  pull_norm):
    m = maps.shape[0]
    e = edge_index.shape[0]
    ldt = _loss_dtype(maps.dtype)
    return (
        maps.new_empty((e,), dtype=ldt),
        maps.new_empty((m,), dtype=ldt),
        maps.new_empty((e,), dtype=torch.long),
        maps.new_empty(maps.shape),
    )


def _fake_backward(grad_edge, maps, logits, labels, edge_index, edge_params, progress, crop_sizes,
                   reduction, pull_norm):
    return maps.new_empty(maps.shape)


def _setup_context(ctx, inputs, output):
    maps, logits, labels, edge_index, edge_params, progress, crop_sizes, reduction, pull_norm = inputs
    _, _, count, grad = output
    ctx.save_for_backward(maps, logits, labels, edge_index, edge_params, progress, grad)
    ctx.crop_sizes, ctx.reduction, ctx.pull_norm = crop_sizes, reduction, pull_norm
    ctx.mark_non_differentiable(count, grad)
    # Unused outputs arrive as None, so the usual node_loss.sum() takes the
    # cheap path below instead of a recompute.
    ctx.set_materialize_grads(False)


_NO_GRADS = (None,) * 8  # logits, labels, edge_index, edge_params, progress, crop_sizes, ...


def _backward(ctx, grad_edge, grad_node, grad_count=None, grad_grad=None):
    maps, logits, labels, edge_index, edge_params, progress, grad = ctx.saved_tensors
    if not ctx.needs_input_grad[0] or (grad_edge is None and grad_node is None):
        return (None, *_NO_GRADS)
    if grad_edge is None:
        # d(sum_t w_t L_t)/dQ_t = w_t * d L_t/dQ_t: the saved gradient, scaled.
        out = grad * grad_node.to(grad.dtype)[:, None, None, None]
    else:
        w = grad_edge
        if grad_node is not None:
            w = w + grad_node[edge_index[:, 1].long()]
        out = torch.ops.ktgfast.attention_crop_loss_backward(
            w, maps, logits, labels, edge_index, edge_params, progress, ctx.crop_sizes,
            ctx.reduction, ctx.pull_norm,
        )
    return (out, *_NO_GRADS)


def _register() -> None:
    torch.library.register_fake("ktgfast::attention_crop_loss")(_fake_forward)
    torch.library.register_fake("ktgfast::attention_crop_loss_backward")(_fake_backward)
    torch.library.register_autograd(
        "ktgfast::attention_crop_loss", _backward, setup_context=_setup_context
    )


if _C is not None:
    _register()
