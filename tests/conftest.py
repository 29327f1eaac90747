"""Shared helpers of the ktgfast test suite: edge builders, random cases and the
comparison of the compiled op with the pure-PyTorch reference."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import pytest
import torch

from ktgfast import LABEL, EdgeSpec
from ktgfast.edges import GATE_KINDS

# The five things an edge can compute: name -> (from the label?, loss name).
KINDS = {
    "kl": (False, "kl"),
    "ce_label": (True, "ce"),
    "kl_label": (True, "kl"),
    "cos": (False, "cos"),
    "pl": (False, "pl"),
}
GATES = tuple(GATE_KINDS)
NODE_LOSSES = ("kl", "cos", "pl")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield


def gate_kwargs(gate: str, tau: float = 0.5) -> dict:
    """Non-trivial parameters of the parametrised gates."""
    if gate == "sine":
        return {"f": 0.7, "phi": 0.4}
    if gate == "threshold":
        return {"tau": tau}
    return {}


def make_edge(kind: str, gate: str, src: int, dst: int, **kw) -> EdgeSpec:
    from_label, loss = KINDS[kind]
    args = {**gate_kwargs(gate, kw.pop("tau", 0.5)), **kw}
    return EdgeSpec(LABEL if from_label else src, dst, loss, gate, **args)


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


def full_graph(M: int, offset: int = 0, temps: Sequence[float] = (1.0, 2.0, 0.5, 4.0),
               tau: float = 0.5) -> list[EdgeSpec]:
    """Every kind of edge on M slots: a label edge into every slot, an edge for
    every ordered pair, and a self-loop on slot 0, cycling through the loss
    kinds, gates and temperatures."""
    edges = []
    i = offset
    for t in range(M):
        kind = ("ce_label", "kl_label")[i % 2]
        edges.append(make_edge(kind, GATES[i % len(GATES)], 0, t, T=temps[i % len(temps)],
                               t2=bool(i % 3), weight=1.0 + 0.25 * (i % 3), tau=tau))
        i += 1
    pairs = [(s, t) for s in range(M) for t in range(M) if s != t] + [(0, 0)]
    for s, t in pairs:
        edges.append(make_edge(NODE_LOSSES[i % 3], GATES[i % len(GATES)], s, t,
                               T=temps[i % len(temps)], t2=bool(i % 2),
                               weight=0.5 + 0.5 * (i % 4), tau=tau))
        i += 1
    return edges


# ---------------------------------------------------------------------------
# Running the op and the reference with gradients.

def _grads(outs, x: torch.Tensor, weightings) -> list[torch.Tensor]:
    res = []
    for f in weightings:
        y = f(outs)
        if not y.requires_grad:  # reference with no live edge: no graph at all
            res.append(torch.zeros_like(x))
            continue
        (g,) = torch.autograd.grad(y, x, retain_graph=True, allow_unused=True)
        res.append(torch.zeros_like(x) if g is None else g)
    return res


def weightings(E: int, M: int, dtype=torch.float32, gen: torch.Generator | None = None):
    """Upstream gradients: node_loss.sum() (the saved-gradient path), a random
    weighting of edge_loss (the backward op) and both at once."""
    w = torch.rand(E, generator=gen, dtype=torch.float64) * 2 - 0.5
    v = torch.rand(M, generator=gen, dtype=torch.float64) * 2 - 0.5
    return [
        lambda o: o.node_loss.sum(),
        lambda o: (o.edge_loss * w.to(o.edge_loss)).sum(),
        lambda o: (o.edge_loss * w.to(o.edge_loss)).sum()
        + (o.node_loss * v.to(o.node_loss)).sum(),
    ]


def run_with_grads(fn: Callable, base: torch.Tensor, labels, edges, progress=0.0,
                   reduction="mean", ws=None, view: Callable | None = None):
    """(outputs, [grad w.r.t. ``base`` for each weighting]) of ``fn`` applied to
    ``view(base)`` (default: base itself), on a fresh leaf copy of ``base``."""
    x = base.detach().clone().requires_grad_(True)
    inp = x if view is None else view(x)
    out = fn(inp, labels, edges, progress, reduction)
    if ws is None:
        ws = weightings(out.edge_loss.numel(), out.node_loss.numel())
    return out, _grads(out, x, ws)


def assert_close_outputs(out, exp, atol, rtol, msg=""):
    torch.testing.assert_close(out.edge_loss, exp.edge_loss.to(out.edge_loss.dtype), atol=atol,
                               rtol=rtol, msg=lambda m: f"edge_loss {msg}\n{m}")
    torch.testing.assert_close(out.node_loss, exp.node_loss.to(out.node_loss.dtype), atol=atol,
                               rtol=rtol, msg=lambda m: f"node_loss {msg}\n{m}")
    assert out.count.dtype == torch.long
    assert torch.equal(out.count, exp.count.to(out.count.device)), (msg, out.count, exp.count)


def check_against_reference(logits, labels, edges, progress=0.0, reduction="mean",
                            atol=None, rtol=None, view=None):
    """Op vs reference: outputs and the gradients of three upstream weightings.

    Both run on ``view(logits)`` (default: the logits themselves); gradients are
    taken w.r.t. ``logits``."""
    import ktgfast.ops as ops
    import ktgfast.reference as ref

    dt = logits.dtype
    if atol is None:
        atol = 1e-10 if dt == torch.float64 else 2e-5
    if rtol is None:
        rtol = 1e-9 if dt == torch.float64 else 1e-4
    E = len(edges)
    M = (logits if view is None else view(logits)).shape[0]
    ws = weightings(E, M)
    out, g = run_with_grads(ops.gated_edge_loss, logits, labels, edges, progress, reduction, ws,
                            view)
    exp, ge = run_with_grads(ref.gated_edge_loss, logits, labels, edges, progress, reduction,
                             ws, view)
    assert out.edge_loss.shape == (E,) and out.node_loss.shape == (M,)
    want = torch.float64 if dt == torch.float64 else torch.float32
    assert out.edge_loss.dtype == want and out.node_loss.dtype == want
    assert_close_outputs(out, exp, atol, rtol)
    for i, (a, b) in enumerate(zip(g, ge)):
        assert a.dtype == dt
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol,
                                   msg=lambda m, i=i: f"gradient of weighting {i}\n{m}")
    return out, g


def random_logits(M, B, C, dtype=torch.float32, scale=2.0):
    return (torch.randn(M, B, C, dtype=torch.float64) * scale).to(dtype)


def raw_args(logits, labels, edges, progress=0.0, reduction="mean"):
    """The positional arguments of torch.ops.ktgfast.gated_edge_loss."""
    from ktgfast.edges import REDUCTIONS, EdgeTable

    table = edges if isinstance(edges, EdgeTable) else EdgeTable(edges, logits.shape[0])
    table = table.to(logits.device)
    prog = torch.tensor(float(progress), dtype=torch.float64, device=logits.device)
    return (logits, labels, table.edge_index, table.edge_params, prog, REDUCTIONS[reduction])


TWO_PI = 2 * math.pi
