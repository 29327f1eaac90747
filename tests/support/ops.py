"""Helpers shared by the op tests (tests/test_ops_gated_edge_loss.py,
tests/test_ops_attention_crop.py): gate parameters, random inputs, upstream
weightings, running an op with gradients, the op-vs-reference comparison of
outputs and gradients, and the CUDA build check.

The op-specific parts (edge builders, full graphs, raw-op arguments) stay in
each test module and call these."""
from __future__ import annotations

from typing import Callable

import torch

from ktgfast.edges import GATE_KINDS

GATES = tuple(GATE_KINDS)


# ---------------------------------------------------------------------------
# Gates and random inputs.

def gate_kwargs(gate: str, tau: float = 0.5) -> dict:
    """Non-trivial parameters of the parametrised gates."""
    if gate == "sine":
        return {"f": 0.7, "phi": 0.4}
    if gate == "threshold":
        return {"tau": tau}
    return {}


def maxprob(z: torch.Tensor) -> torch.Tensor:
    """max softmax(z) at T = 1 along the class dim, in float64."""
    return torch.softmax(z.double(), -1).amax(-1)


def split_tau(z_src: torch.Tensor) -> float:
    """A threshold half-way between two neighbouring source max-probs (so that
    about half the samples pass and none sits close to the boundary)."""
    p = torch.sort(maxprob(z_src)).values
    if p.numel() == 1:
        return float(p[0]) / 2
    i = p.numel() // 2
    return float(p[i - 1] + p[i]) / 2


def labels_half_correct(z_src: torch.Tensor, C: int, gen: torch.Generator | None = None):
    """Labels equal to the source's arg-max on even samples, random elsewhere."""
    B = z_src.shape[0]
    y = torch.randint(0, C, (B,), generator=gen)
    y[::2] = z_src.argmax(-1)[::2]
    return y


def random_logits(M, B, C, dtype=torch.float32, scale=2.0):
    """(M, B, C) standard-normal logits times ``scale``, drawn in float64."""
    return (torch.randn(M, B, C, dtype=torch.float64) * scale).to(dtype)


# ---------------------------------------------------------------------------
# Running an op with gradients.

def weightings(E: int, M: int, gen: torch.Generator | None = None):
    """Upstream gradients: node_loss.sum() and a random weighting of node_loss
    (the saved-gradient path), a random weighting of edge_loss (the backward op)
    and both at once."""
    w = torch.rand(E, generator=gen, dtype=torch.float64) * 2 - 0.5
    v = torch.rand(M, generator=gen, dtype=torch.float64) * 2 - 0.5
    return [
        lambda o: o.node_loss.sum(),
        lambda o: (o.node_loss * v.to(o.node_loss)).sum(),
        lambda o: (o.edge_loss * w.to(o.edge_loss)).sum(),
        lambda o: (o.edge_loss * w.to(o.edge_loss)).sum()
        + (o.node_loss * v.to(o.node_loss)).sum(),
    ]


def grads_of_weightings(outs, x: torch.Tensor, weightings) -> list[torch.Tensor]:
    """[d f(outs) / d x for f in weightings]; zeros where ``x`` is not used."""
    res = []
    for f in weightings:
        y = f(outs)
        if not y.requires_grad:  # reference with no live edge: no graph at all
            res.append(torch.zeros_like(x))
            continue
        (g,) = torch.autograd.grad(y, x, retain_graph=True, allow_unused=True)
        res.append(torch.zeros_like(x) if g is None else g)
    return res


def run_op_with_grads(call: Callable, base: torch.Tensor, ws=None, view: Callable | None = None):
    """(outputs, [grad w.r.t. ``base`` for each weighting]) of ``call`` applied to
    ``view(base)`` (default: base itself), on a fresh leaf copy of ``base``;
    ``ws`` default: :func:`weightings` drawn after the call."""
    x = base.detach().clone().requires_grad_(True)
    inp = x if view is None else view(x)
    out = call(inp)
    if ws is None:
        ws = weightings(out.edge_loss.numel(), out.node_loss.numel())
    return out, grads_of_weightings(out, x, ws)


# ---------------------------------------------------------------------------
# Op against reference.

def assert_close_outputs(out, exp, atol, rtol, msg=""):
    """edge_loss and node_loss close, count equal (and int64)."""
    for name in ("edge_loss", "node_loss"):
        a, b = getattr(out, name), getattr(exp, name)
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol,
                                   msg=lambda m, name=name: f"{name} {msg}\n{m}")
    assert out.count.dtype == torch.long
    assert torch.equal(out.count, exp.count.to(out.count.device)), (msg, out.count, exp.count)


def assert_matches_reference(out, grads, exp, exp_grads, E: int, M: int, dtype: torch.dtype,
                             atol, rtol) -> None:
    """The op's outputs ``out`` and gradients ``grads`` (one per weighting)
    against the reference's: shapes (E,) / (M,), float64 losses for float64
    inputs and float32 otherwise, values within (atol, rtol), gradients in the
    input dtype."""
    assert out.edge_loss.shape == (E,) and out.node_loss.shape == (M,)
    want = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.edge_loss.dtype == want and out.node_loss.dtype == want
    assert_close_outputs(out, exp, atol, rtol)
    for i, (a, b) in enumerate(zip(grads, exp_grads)):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol,
                                   msg=lambda m, i=i: f"gradient of weighting {i}\n{m}")


def assert_fake_kernels_match(op, op_bwd, args, E: int) -> None:
    """The fake (meta) kernels of ``op`` and its backward ``op_bwd`` give the
    shapes, dtypes and strides of the real ones on ``args``."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = op(*args)
    real_b = op_bwd(torch.ones(E), *args)
    with FakeTensorMode() as mode:
        fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = op(*fargs)
        fake_b = op_bwd(mode.from_tensor(torch.ones(E)), *fargs)
    for r, f in zip((*real, real_b), (*fake, fake_b)):
        assert r.shape == f.shape and r.dtype == f.dtype and r.stride() == f.stride()


def run_at_thread_counts(run: Callable, counts=(1, 2)) -> dict:
    """{n: run() with n intra-op threads}; the thread count is restored after."""
    n = torch.get_num_threads()
    try:
        results = {}
        for threads in counts:
            torch.set_num_threads(threads)
            results[threads] = run()
    finally:
        torch.set_num_threads(n)
    return results


# ---------------------------------------------------------------------------
# CUDA.

def cuda_built() -> bool:
    """Whether ktgfast._C was built with its CUDA kernels."""
    try:
        from ktgfast import _C

        return bool(_C.build_info()["with_cuda"])
    except Exception:  # pragma: no cover
        return False
