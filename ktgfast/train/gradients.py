"""Per-loss gradients of K losses that share parameters (the input of PCGrad),
and writing an aggregated gradient back for the optimizer.

``per_loss_gradients`` runs ONE batched backward: the vector-Jacobian products
of the K rows of the identity, vmapped (``is_grads_batched=True``).  Backward
formulas without a vmap batching rule make that fail; it then falls back to K
separate backwards, warns once and remembers the fallback for the process.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

# Why the batched backward was given up (None: not given up).  Set only after
# the separate backwards of the same call succeeded, so an error that is not
# vmap's (e.g. a loss without a graph) never disables the batched path.
_batched_failure: str | None = None


def _check(losses: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1 or losses.shape[0] < 1:
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(f"losses must be a (K,) tensor with K >= 1 (e.g. torch.stack of the losses), got {shape}")
    if not params:
        raise ValueError("params is empty: give the shared parameters to differentiate")


def _materialise(grads, params, k: int) -> list[torch.Tensor]:
    """Zeros (K, *p.shape) for the parameters no loss reaches."""
    return [g if g is not None else p.new_zeros((k, *p.shape)) for g, p in zip(grads, params)]


def _batched(losses, params) -> list[torch.Tensor]:
    k = losses.shape[0]
    eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
    # retain_graph: if vmap fails half-way, the separate backwards still need the graph.
    grads = torch.autograd.grad(losses, params, grad_outputs=eye, is_grads_batched=True,
                                retain_graph=True, allow_unused=True)
    return _materialise(grads, params, k)


def _separate(losses, params, retain_graph: bool) -> list[torch.Tensor]:
    k = losses.shape[0]
    rows = []
    for i in range(k):
        grads = torch.autograd.grad(losses[i], params, retain_graph=retain_graph or i < k - 1,
                                    allow_unused=True)
        rows.append([g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)])
    return [torch.stack([row[t] for row in rows]) for t in range(len(params))]


def per_loss_gradients(
    losses: torch.Tensor,
    params: Sequence[torch.Tensor],
    batched: bool = True,
    retain_graph: bool = False,
) -> list[torch.Tensor]:
    """The gradients of each of the K losses w.r.t. the shared parameters.

    Args:
        losses: ``(K,)``, e.g. ``torch.stack([loss_1, ..., loss_K])``.
        params: the parameters (tensors requiring grad).
        batched: one vmapped backward (default); ``False``: K backwards.
        retain_graph: keep the graph for another backward.  (The batched
            backward always keeps the graph's buffers until ``losses`` is
            dropped, so that the fallback can still run if vmap fails midway.)

    Returns:
        one ``(K, *p.shape)`` tensor per parameter, row ``k`` the gradient of
        ``losses[k]``; zeros where a loss does not reach a parameter.  The
        ``p.grad`` fields are not touched.
    """
    global _batched_failure
    _check(losses, params)
    params = list(params)
    if batched and _batched_failure is None:
        try:
            return _batched(losses, params)
        except RuntimeError as exc:  # vmap: no batching rule for some backward op
            grads = _separate(losses, params, retain_graph)
            _batched_failure = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            warnings.warn(
                "per_loss_gradients: the batched backward failed, using K separate backwards "
                f"from now on ({_batched_failure})",
                RuntimeWarning,
                stacklevel=2,
            )
            return grads
    return _separate(losses, params, retain_graph)


def batched_fallback_reason() -> str | None:
    """Why the batched backward was given up in this process (None: it was not)."""
    return _batched_failure


def reset_batched_fallback() -> None:
    """Try the batched backward again (e.g. after switching models)."""
    global _batched_failure
    _batched_failure = None


def apply_update(params: Sequence[torch.Tensor], update: Sequence[torch.Tensor]) -> None:
    """Write an aggregated gradient into ``p.grad`` (replacing what was there),
    so that an optimizer can step.  ``update[t]`` has ``params[t]``'s shape."""
    params, update = list(params), list(update)
    if len(params) != len(update):
        raise ValueError(f"apply_update: {len(params)} parameters but {len(update)} update tensors")
    for t, (p, u) in enumerate(zip(params, update)):
        if u.shape != p.shape:
            raise ValueError(f"apply_update: update[{t}] has shape {tuple(u.shape)}, "
                             f"the parameter {tuple(p.shape)}")
        u = u.detach().to(dtype=p.dtype, device=p.device)
        if p.grad is None:
            p.grad = u
        else:
            p.grad.copy_(u)
