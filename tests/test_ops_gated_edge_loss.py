"""Tests of the fused gated edge-loss op (ktgfast.ops.gated_edge_loss, the raw
torch.ops.ktgfast ops, their fake kernels and autograd) against the pure-PyTorch
reference (ktgfast.reference) and hand-computed gate semantics."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F

import ktgfast.ops as ops
import ktgfast.reference as ref
from ktgfast import LABEL, EdgeSpec, EdgeTable, progress_of
from ktgfast.edges import REDUCTIONS
from support.ops import (GATES, assert_close_outputs, assert_fake_kernels_match,
                         assert_matches_reference, cuda_built, gate_kwargs, labels_half_correct,
                         maxprob, random_logits, run_at_thread_counts, run_op_with_grads, split_tau,
                         weightings)


# ---------------------------------------------------------------------------
# Helpers of this op: edge builders, running the op and the reference with
# gradients (the op-independent ones are in tests/support/ops.py).

# The five things an edge can compute: name -> (from the label?, loss name).
KINDS = {
    "kl": (False, "kl"),
    "ce_label": (True, "ce"),
    "kl_label": (True, "kl"),
    "cos": (False, "cos"),
    "pl": (False, "pl"),
}
NODE_LOSSES = ("kl", "cos", "pl")


def make_edge(kind: str, gate: str, src: int, dst: int, **kw) -> EdgeSpec:
    from_label, loss = KINDS[kind]
    args = {**gate_kwargs(gate, kw.pop("tau", 0.5)), **kw}
    return EdgeSpec(src=LABEL if from_label else src, dst=dst, loss=loss, gate=gate, **args)


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


def run_with_grads(fn: Callable, base: torch.Tensor, labels, edges, progress=0.0,
                   reduction="mean", ws=None, view: Callable | None = None):
    """(outputs, [grad w.r.t. ``base`` for each weighting]) of ``fn`` applied to
    ``view(base)`` (default: base itself), on a fresh leaf copy of ``base``."""
    return run_op_with_grads(lambda inp: fn(inp, labels, edges, progress, reduction), base, ws, view)


def check_against_reference(logits, labels, edges, progress=0.0, reduction="mean",
                            atol=None, rtol=None, view=None):
    """Op vs reference: outputs, and the gradients of every upstream weighting.

    Both run on ``view(logits)`` (default: the logits themselves); gradients are
    taken w.r.t. ``logits``."""
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
    assert_matches_reference(out, g, exp, ge, E, M, dt, atol, rtol)
    return out, g


def raw_args(logits, labels, edges, progress=0.0, reduction="mean"):
    """The positional arguments of torch.ops.ktgfast.gated_edge_loss."""
    table = edges if isinstance(edges, EdgeTable) else EdgeTable(edges, logits.shape[0])
    table = table.to(logits.device)
    prog = torch.tensor(float(progress), dtype=torch.float64, device=logits.device)
    return (logits, labels, table.edge_index, table.edge_params, prog, REDUCTIONS[reduction])


# Without the extension this module cannot run: fail collection with the build hint.
ops._require_extension()

OP = torch.ops.ktgfast.gated_edge_loss.default
OP_BWD = torch.ops.ktgfast.gated_edge_loss_backward.default


def loss(z, y, edges, progress=0.0, reduction="mean"):
    return ops.gated_edge_loss(z, y, edges, progress, reduction)


def grad_of(z, y, edges, progress=0.0, reduction="mean", f=lambda o: o.node_loss.sum()):
    x = z.detach().clone().requires_grad_(True)
    out = ops.gated_edge_loss(x, y, edges, progress, reduction)
    f(out).backward()
    return out, x.grad


# ---------------------------------------------------------------------------
# 1. Forward and gradient equal the reference.

KIND_GATE = [(k, g) for k in KINDS for g in GATES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind,gate", KIND_GATE, ids=[f"{k}-{g}" for k, g in KIND_GATE])
def test_kind_gate_matches_reference(kind, gate, dtype):
    i = KIND_GATE.index((kind, gate))
    M = 2 + i % 6
    B = (3, 8, 64)[i % 3]
    C = (2, 5, 100, 17)[i % 4]
    reduction = ("mean", "sum")[i % 2]
    T = (1.0, 2.5, 0.5)[i % 3]
    t2 = bool((i // 2) % 2)
    progress = (0.37, 0.81)[i % 2]
    z = random_logits(M, B, C, dtype, scale=3.0)
    src, dst = i % M, (i + 1) % M
    src2 = (i + 2) % M
    y = labels_half_correct(z[src], C)
    tau = split_tau(z[src])
    edges = [
        make_edge(kind, gate, src, dst, T=T, t2=t2, weight=1.5, tau=tau),
        # same destination, another temperature: exercises the per-T cache
        make_edge(kind, gate, src2, dst, T=1.0 if T != 1.0 else 3.0, t2=not t2, tau=tau),
        make_edge("ce_label", "through", 0, src, T=2.0),
    ]
    out, _ = check_against_reference(z, y, edges, progress, reduction)
    # the gates did something non-trivial on the main edge
    n_pass = int(out.count[0])
    if gate == "cutoff":
        assert n_pass == 0 and out.edge_loss[0] == 0
    elif gate == "threshold" and not KINDS[kind][0]:
        assert n_pass == int((maxprob(z[src]) > tau).sum())
        if B > 1:
            assert 0 < n_pass < B
    elif gate == "correct" and not KINDS[kind][0]:
        assert n_pass == int((z[src].argmax(-1) == y).sum()) >= (B + 1) // 2
    else:
        assert n_pass == B


# every M in 1..7, B in {1, 3, 64}, C in {1, 2, 100, 1000}
SHAPES = [
    (1, 3, 100),
    (2, 1, 1000),
    (3, 64, 2),
    (4, 3, 1),
    (5, 64, 100),
    (6, 1, 2),
    (7, 3, 100),
    (3, 64, 1000),
    (2, 64, 1),
]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("M,B,C", SHAPES, ids=[f"M{m}-B{b}-C{c}" for m, b, c in SHAPES])
def test_full_graph_matches_reference(M, B, C, reduction):
    z = random_logits(M, B, C, scale=3.0)
    y = labels_half_correct(z[0], C)
    edges = full_graph(M, offset=M + B + C, tau=split_tau(z[0]))
    check_against_reference(z, y, edges, progress=0.6, reduction=reduction)


@pytest.mark.parametrize("M,B,C", [(3, 8, 10), (4, 3, 1000)])
def test_full_graph_float64_matches_reference(M, B, C):
    z = random_logits(M, B, C, torch.float64, scale=3.0)
    y = labels_half_correct(z[0], C)
    edges = full_graph(M, temps=(1.0, 3.0, 0.25, 7.0), tau=split_tau(z[0]))
    check_against_reference(z, y, edges, progress=0.3, reduction="sum")


def test_edge_table_and_spec_list_agree():
    z = random_logits(3, 8, 10)
    y = torch.randint(0, 10, (8,))
    edges = full_graph(3)
    a = loss(z, y, edges, 0.4)
    b = loss(z, y, EdgeTable(edges, 3), 0.4)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_edge_alone_equals_edge_in_graph(dtype):
    """Per-row caches (destination exps per temperature, source exps shared by the
    threshold gate) must not leak between edges: every edge's loss and count in
    the full graph equal those of the edge computed alone, bitwise, in any order."""
    M, B, C = 4, 6, 9
    z = random_logits(M, B, C, dtype)
    y = labels_half_correct(z[0].double(), C)
    edges = full_graph(M, temps=(1.0, 2.0, 1.0, 0.5), tau=split_tau(z[0]))
    # a run of same-destination edges alternating temperatures, closed gates between
    edges += [make_edge(k, g, s, 1, T=T, tau=split_tau(z[s])) for k, g, s, T in [
        ("cos", "threshold", 2, 1.0), ("cos", "through", 3, 1.0), ("kl", "threshold", 0, 2.0),
        ("cos", "linear", 0, 2.0), ("kl", "cutoff", 2, 1.0), ("cos", "threshold", 3, 2.0),
        ("pl", "threshold", 2, 1.0), ("kl", "threshold", 3, 1.0), ("cos", "through", 2, 1.0)]]
    together = loss(z, y, edges, 0.5)
    perm = torch.randperm(len(edges)).tolist()
    shuffled = loss(z, y, [edges[i] for i in perm], 0.5)
    for i, e in enumerate(edges):
        alone = loss(z, y, [e], 0.5)
        assert torch.equal(together.edge_loss[i:i + 1], alone.edge_loss), (i, e)
        assert torch.equal(together.count[i:i + 1], alone.count), (i, e)
    assert torch.equal(shuffled.edge_loss, together.edge_loss[perm])
    assert torch.equal(shuffled.count, together.count[perm])
    torch.testing.assert_close(shuffled.node_loss, together.node_loss, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_extreme_temperatures(dtype):
    z = random_logits(3, 8, 10, dtype)
    y = labels_half_correct(z[0], 10)
    check_against_reference(z, y, full_graph(3, temps=(1e-3, 0.01, 100.0, 1.0)), 0.5)


def test_no_edges():
    z = random_logits(2, 4, 5).requires_grad_(True)
    y = torch.randint(0, 5, (4,))
    out = loss(z, y, [])
    assert out.edge_loss.shape == (0,) and out.count.shape == (0,)
    assert torch.equal(out.node_loss, torch.zeros(2))
    out.node_loss.sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_sources_get_no_gradient():
    """Only destinations receive gradient (sources are detached)."""
    z = random_logits(4, 6, 7)
    y = torch.randint(0, 7, (6,))
    edges = [EdgeSpec(src=0, dst=2, loss="kl", T=2.0), EdgeSpec(src=1, dst=2, loss="cos"),
             EdgeSpec(src=1, dst=3, loss="pl"),
             EdgeSpec(src=LABEL, dst=3, loss="ce")]
    for f in weightings(len(edges), 4):
        _, g = grad_of(z, y, edges, f=f)
        assert torch.equal(g[:2], torch.zeros_like(g[:2]))
        assert g[2:].abs().sum() > 0


def test_backward_op_matches_saved_gradient():
    """The backward op with unit weights reproduces the forward's gradient output
    bitwise, and with a one-hot weight the gradient of that single edge."""
    z = random_logits(3, 5, 9)
    y = labels_half_correct(z[0], 9)
    edges = full_graph(3)
    args = raw_args(z, y, edges, 0.5)
    edge_loss, node_loss, count, grad = OP(*args)
    E = len(edges)
    g1 = OP_BWD(torch.ones(E), *args)
    assert torch.equal(g1, grad)
    for e in (0, 4, E - 1):
        w = torch.zeros(E)
        w[e] = 1
        _, g = grad_of(z, y, edges, 0.5, f=lambda o, e=e: o.edge_loss[e])
        torch.testing.assert_close(OP_BWD(w, *args), g, atol=0, rtol=0)
        _, gr = run_with_grads(ref.gated_edge_loss, z, y, edges, 0.5, "mean",
                               [lambda o, e=e: o.edge_loss[e]])
        torch.testing.assert_close(g, gr[0], atol=2e-6, rtol=1e-4)


# ---------------------------------------------------------------------------
# 2. Non-contiguous inputs.

def _views(M, B, C):
    """(base shape, view function) pairs giving (M, B, C) tensors of many layouts."""
    return {
        "transposed": ((C, B, M), lambda t: t.permute(2, 1, 0)),
        "class_stride2": ((M, B, 2 * C), lambda t: t[..., ::2]),
        "class_slice": ((M, B, C + 3), lambda t: t[..., 1:C + 1]),
        "m_stride": ((2 * M, B, C), lambda t: t[::2]),
        "b_stride": ((M, 2 * B, C), lambda t: t[:, ::2]),
        "b_major": ((B, M, C), lambda t: t.transpose(0, 1)),
        "m_expand": ((1, B, C), lambda t: t.expand(M, B, C)),
        "b_class_swapped": ((M, C, B), lambda t: t.transpose(1, 2)),
    }


@pytest.mark.parametrize("layout", list(_views(1, 1, 1)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_non_contiguous_logits(layout, dtype):
    M, B, C = 3, 6, 11
    shape, view = _views(M, B, C)[layout]
    base = (torch.randn(shape, dtype=torch.float64) * 3).to(dtype)
    v = view(base)
    assert v.shape == (M, B, C) and not v.is_contiguous()
    y = labels_half_correct(v[0], C)
    edges = full_graph(M, tau=split_tau(v[0]))
    out, grads = check_against_reference(base, y, edges, 0.45, "sum", view=view)
    # identical to the result on a contiguous copy
    ref_out = loss(v.contiguous(), y, edges, 0.45, "sum")
    for a, b in zip(out, ref_out):
        assert torch.equal(a.detach(), b.detach())


def test_non_contiguous_labels():
    M, B, C = 3, 7, 6
    z = random_logits(M, B, C)
    big = torch.randint(0, C, (3 * B,))
    y = big[::3]
    assert not y.is_contiguous()
    edges = full_graph(M)
    check_against_reference(z, y, edges, 0.5)
    a = loss(z, y, edges, 0.5)
    b = loss(z, y.contiguous(), edges, 0.5)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_non_contiguous_raw_op_inputs():
    """Strided edge_index / edge_params / progress are accepted by the raw op."""
    M, B, C = 3, 4, 5
    z = random_logits(M, B, C)
    y = torch.randint(0, C, (B,))
    edges = full_graph(M)
    logits, labels, ei, ep, prog, red = raw_args(z, y, edges, 0.25)
    ei_nc = torch.stack([ei, ei], 2).reshape(-1, 8)[:, ::2]
    ep_nc = ep.t().contiguous().t()
    assert not ei_nc.is_contiguous() and not ep_nc.is_contiguous()
    prog1 = prog.reshape(1)
    a = OP(logits, labels, ei, ep, prog, red)
    b = OP(logits, labels, ei_nc, ep_nc, prog1, red)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


# ---------------------------------------------------------------------------
# 3. Half precision: error of the op vs a float64 reference, relative to the
# reference's own error on the same low-precision input (flash-attention style:
# |op - ref64| <= k |ref_lowp - ref64| + atol).  ref64 runs on the *rounded*
# input cast to float64, so only the computation's error is measured; the
# reference computes in float32 and rounds its gradient to the input dtype
# once, so its gradient error is one rounding: the op may be at most 2x that
# plus one ulp of the largest gradient.

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("M,B,C", [(3, 16, 100), (2, 8, 1000), (4, 3, 2)])
def test_low_precision(dtype, M, B, C):
    zl = random_logits(M, B, C, dtype, scale=3.0)
    y = labels_half_correct(zl[0].double(), C)
    edges = full_graph(M, tau=split_tau(zl[0]))
    ws = weightings(len(edges), M)
    out, g = run_with_grads(ops.gated_edge_loss, zl, y, edges, 0.6, "mean", ws)
    exp_l, ge_l = run_with_grads(ref.gated_edge_loss, zl, y, edges, 0.6, "mean", ws)
    exp64, ge64 = run_with_grads(ref.gated_edge_loss, zl.double(), y, edges, 0.6, "mean", ws)
    assert out.edge_loss.dtype == torch.float32 and out.node_loss.dtype == torch.float32
    assert torch.equal(out.count, exp64.count)
    for name in ("edge_loss", "node_loss"):
        a, r, r64 = getattr(out, name).double(), getattr(exp_l, name).double(), getattr(exp64, name)
        err, ref_err = (a - r64).abs(), (r - r64).abs()
        assert (err <= 3 * ref_err + 1e-5 * (1 + r64.abs())).all(), (name, err.max(), ref_err.max())
    eps = torch.finfo(dtype).eps
    for i, (a, r, r64) in enumerate(zip(g, ge_l, ge64)):
        assert a.dtype == dtype and r.dtype == dtype
        err, ref_err = (a.double() - r64).abs(), (r.double() - r64).abs()
        atol = eps * r64.abs().max() + 1e-7
        assert (err <= 2 * ref_err + atol).all(), (i, err.max(), ref_err.max(), atol)


def test_low_precision_raw_outputs_dtypes():
    z = random_logits(2, 3, 4, torch.bfloat16)
    y = torch.randint(0, 4, (3,))
    edges = [EdgeSpec(src=0, dst=1), EdgeSpec(src=LABEL, dst=0, loss="ce")]
    el, nl, cnt, grad = OP(*raw_args(z, y, edges))
    assert el.dtype == nl.dtype == torch.float32 and cnt.dtype == torch.long
    assert grad.dtype == torch.bfloat16 and grad.shape == z.shape
    assert OP_BWD(torch.ones(2), *raw_args(z, y, edges)).dtype == torch.bfloat16


# ---------------------------------------------------------------------------
# 4. gradcheck (only destination slots vary) and opcheck.

GRADCHECK_GATES = {
    "kl": ("linear", "correct"),
    "ce_label": ("sine", "neg_linear"),
    "kl_label": ("correct", "cutoff"),
    "cos": ("threshold", "sine"),
    "pl": ("neg_linear", "threshold"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck_float64(kind):
    B, C = 3, 5
    src = torch.randn(2, B, C, dtype=torch.float64) * 2
    dst = (torch.randn(2, B, C, dtype=torch.float64) * 2).requires_grad_(True)
    y = labels_half_correct(src[0], C)
    g1, g2 = GRADCHECK_GATES[kind]
    tau = split_tau(src[1])
    edges = [
        make_edge(kind, "through", 0, 2, T=2.0),
        make_edge(kind, g1, 1, 3, tau=tau),
        make_edge(kind, g2, 0, 3, T=0.5, t2=False, tau=tau, weight=0.7),
        make_edge(kind, g2, 1, 2, T=1.5, tau=tau),
    ]
    reduction = "sum" if kind in ("kl", "cos") else "mean"

    def f(d):
        out = ops.gated_edge_loss(torch.cat([src, d]), y, edges, 0.3, reduction)
        return out.edge_loss, out.node_loss

    assert torch.autograd.gradcheck(f, (dst,), eps=1e-6, atol=1e-7, rtol=1e-5)
    # the edge-weighted path alone (the separate backward op)
    w = torch.randn(len(edges), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda d: (f(d)[0] * w).sum(), (dst,), eps=1e-6, atol=1e-7)


def _opcheck_case(dtype, noncontig=False, requires_grad=True):
    M, B, C = 3, 4, 6
    z = random_logits(M, B, C, dtype)
    if noncontig:
        z = z.transpose(0, 1).contiguous().transpose(0, 1)
    y = labels_half_correct(z[0].double(), C)
    edges = full_graph(M, tau=split_tau(z[0]))
    args = raw_args(z.requires_grad_(requires_grad), y, edges, 0.4)
    return args, len(edges)


@pytest.mark.parametrize(
    "dtype,noncontig",
    [(torch.float32, False), (torch.float64, False), (torch.bfloat16, False),
     (torch.float32, True)],
    ids=["f32", "f64", "bf16", "f32-noncontig"],
)
def test_opcheck_forward(dtype, noncontig):
    args, _ = _opcheck_case(dtype, noncontig)
    torch.library.opcheck(OP, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_opcheck_backward(dtype):
    args, E = _opcheck_case(dtype, requires_grad=False)
    grad_edge = torch.randn(E, dtype=ops._loss_dtype(dtype))
    torch.library.opcheck(OP_BWD, (grad_edge, *args))


def test_fake_kernels_match_real_metadata():
    args, E = _opcheck_case(torch.float16, requires_grad=False)
    assert_fake_kernels_match(OP, OP_BWD, args, E)


# ---------------------------------------------------------------------------
# 5. torch.compile(fullgraph=True).

@pytest.mark.slow  # torch.compile: seconds of Dynamo/Inductor per case
@pytest.mark.parametrize("prebuilt_table", [True, False], ids=["table", "specs"])
def test_torch_compile_fullgraph(prebuilt_table):
    torch._dynamo.reset()
    M, B, C = 3, 8, 10
    z = random_logits(M, B, C)
    y = labels_half_correct(z[0], C)
    specs = full_graph(M)
    edges = EdgeTable(specs, M) if prebuilt_table else specs
    E = len(specs)
    w = torch.randn(E)

    def f(x, labels, progress):
        out = ops.gated_edge_loss(x, labels, edges, progress, "mean")
        total = out.node_loss.sum() + (out.edge_loss * w).sum()
        return total, out.edge_loss, out.node_loss, out.count

    prog = torch.tensor(0.35, dtype=torch.float64)
    cf = torch.compile(f, fullgraph=True)
    xe = z.clone().requires_grad_(True)
    xc = z.clone().requires_grad_(True)
    eager = f(xe, y, prog)
    comp = cf(xc, y, prog)
    eager[0].backward()
    comp[0].backward()
    for a, b in zip(eager, comp):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(xc.grad, xe.grad, atol=1e-6, rtol=1e-6)
    # node_loss.sum() alone (the saved-gradient path) under compile
    xe.grad = xc.grad = None
    g = torch.compile(lambda x: ops.gated_edge_loss(x, y, edges, prog).node_loss.sum(),
                      fullgraph=True)
    g(xc).backward()
    ops.gated_edge_loss(xe, y, edges, prog).node_loss.sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------
# 6. Extreme logits.

def test_huge_logits_finite_and_match_float64():
    M, B, C = 3, 8, 10
    z = random_logits(M, B, C, scale=1e4)
    y = labels_half_correct(z[0], C)
    edges = full_graph(M, temps=(1.0, 5000.0, 2.0, 1e4))
    ws = weightings(len(edges), M)
    out, g = run_with_grads(ops.gated_edge_loss, z, y, edges, 0.5, "mean", ws)
    exp, ge = run_with_grads(ref.gated_edge_loss, z.double(), y, edges, 0.5, "mean", ws)
    assert torch.isfinite(out.edge_loss).all() and torch.isfinite(out.node_loss).all()
    assert out.edge_loss.abs().max() > 100  # really in the large regime
    assert_close_outputs(out, exp, atol=1e-3, rtol=1e-5)
    for a, b in zip(g, ge):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-4)


def test_huge_fp16_logits_finite():
    M, B, C = 3, 8, 10
    z = (torch.randn(M, B, C) * 1e4).clamp(-6e4, 6e4).half()
    y = labels_half_correct(z[0].double(), C)
    edges = full_graph(M, temps=(1.0, 5000.0, 2.0, 1e4))
    ws = weightings(len(edges), M)
    out, g = run_with_grads(ops.gated_edge_loss, z, y, edges, 0.5, "mean", ws)
    exp, ge = run_with_grads(ref.gated_edge_loss, z.double(), y, edges, 0.5, "mean", ws)
    assert torch.isfinite(out.edge_loss).all() and torch.isfinite(out.node_loss).all()
    assert_close_outputs(out, exp, atol=1e-2, rtol=1e-5)
    for a, b in zip(g, ge):
        assert a.dtype == torch.float16 and torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, atol=2e-3, rtol=2e-3)


def _safe_per_sample_loss(spec, zt, zs, labels):
    """The reference's per-sample loss with KL written as
    sum where(p > 0, p (log p - log q), 0), finite when p and q vanish together."""
    if zs is not None and spec.loss == "kl":
        log_q = F.log_softmax(zt / spec.T, -1)
        log_p = F.log_softmax(zs / spec.T, -1)
        p = log_p.exp()
        return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)
    return _ORIG_PER_SAMPLE_LOSS(spec, zt, zs, labels)


_ORIG_PER_SAMPLE_LOSS = ref.per_sample_loss


@pytest.mark.parametrize("where", ["both", "source_only"])
def test_minus_inf_logits(where, monkeypatch):
    M, B, C = 3, 6, 8
    z = random_logits(M, B, C)
    mask = torch.rand(B, C) < 0.4
    mask[:, 0] = False  # never an all -inf row
    y = torch.zeros(B, dtype=torch.long)
    for n in range(B):  # labels at finite positions only (CE stays finite)
        y[n] = int(torch.nonzero(~mask[n])[-1])
    if where == "both":
        z[:, mask] = -math.inf
        # destinations only receive from slots with the same -inf pattern
        edges = full_graph(M, tau=0.3)
    else:
        z[0, mask] = -math.inf
        edges = [make_edge(k, g, 0, t, T=T) for k, g, t, T in [
            ("kl", "through", 1, 2.0), ("cos", "linear", 2, 1.0), ("pl", "correct", 1, 0.5),
            ("kl", "threshold", 2, 1.0), ("ce_label", "sine", 1, 1.0)]]
        edges.append(EdgeSpec(src=LABEL, dst=0, loss="ce"))  # must not see the -inf of slot 0
        y[:] = 0
    monkeypatch.setattr(ref, "per_sample_loss", _safe_per_sample_loss)
    ws = weightings(len(edges), M)
    out, g = run_with_grads(ops.gated_edge_loss, z, y, edges, 0.5, "mean", ws)
    exp, ge = run_with_grads(ref.gated_edge_loss, z.double(), y, edges, 0.5, "mean", ws)
    assert torch.isfinite(exp.edge_loss).all()
    assert torch.isfinite(out.edge_loss).all() and torch.isfinite(out.node_loss).all()
    assert_close_outputs(out, exp, atol=2e-5, rtol=1e-4)
    for a, b in zip(g, ge):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, atol=2e-6, rtol=1e-4)
    if where == "both":  # the -inf classes get exactly zero gradient
        assert (g[0][:, mask] == 0).all()


def test_minus_inf_float64_kl_by_hand():
    """KL with -inf at equal positions, against the where-form computed by hand."""
    zs = torch.tensor([[1.0, -math.inf, 0.5, -math.inf]], dtype=torch.float64)
    zt = torch.tensor([[0.2, -math.inf, 2.0, -math.inf]], dtype=torch.float64)
    z = torch.stack([zs, zt])  # (2, 1, 4)
    y = torch.zeros(1, dtype=torch.long)
    out, g = grad_of(z, y, [EdgeSpec(src=0, dst=1, loss="kl", T=2.0)])
    p = torch.softmax(zs / 2, -1)
    q = torch.softmax(zt / 2, -1)
    kl = torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p)).sum()
    torch.testing.assert_close(out.edge_loss[0], 4 * kl, atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(g[1, 0], 4 * (q - p)[0] / 2, atol=1e-14, rtol=1e-12)
    assert torch.equal(g[1, 0, [1, 3]], torch.zeros(2, dtype=torch.float64))


# ---------------------------------------------------------------------------
# 7. Gate semantics by hand.

def _two_slot(B=6, C=4, dtype=torch.float64):
    z = random_logits(2, B, C, dtype)
    y = torch.randint(0, C, (B,))
    return z, y


def test_correct_gate_by_hand():
    B, C = 8, 5
    z = random_logits(2, B, C, torch.float64)
    y = z[0].argmax(-1).clone()
    y[[1, 4, 5]] = (y[[1, 4, 5]] + 1) % C  # these three are wrong
    passing = torch.ones(B, dtype=torch.bool)
    passing[[1, 4, 5]] = False
    for reduction, div in (("mean", B), ("sum", 1)):
        out, g = grad_of(z, y, [EdgeSpec(src=0, dst=1, loss="kl", gate="correct")], reduction=reduction)
        assert int(out.count[0]) == 5
        per = F.kl_div(F.log_softmax(z[1], -1), F.softmax(z[0], -1), reduction="none").sum(-1)
        torch.testing.assert_close(out.edge_loss[0], per[passing].sum() / div)
        assert torch.equal(g[1, ~passing], torch.zeros(3, C, dtype=torch.float64))
        assert (g[1, passing].abs().sum(-1) > 0).all()
    # from the label, Correct always passes
    out = loss(z, y, [EdgeSpec(src=LABEL, dst=1, loss="ce", gate="correct")])
    assert int(out.count[0]) == B


def test_linear_gate_endpoints_with_progress_of():
    z, y = _two_slot()
    k_end = 50
    lin = [EdgeSpec(src=0, dst=1, loss="kl", gate="linear"),
           EdgeSpec(src=LABEL, dst=0, loss="ce", gate="linear")]
    thr = [EdgeSpec(src=0, dst=1, loss="kl"), EdgeSpec(src=LABEL, dst=0, loss="ce")]
    first, g_first = grad_of(z, y, lin, progress_of(0, k_end))
    assert torch.equal(first.edge_loss, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(first.count, torch.zeros(2, dtype=torch.long))
    assert torch.equal(g_first, torch.zeros_like(g_first))
    assert progress_of(k_end - 1, k_end) == 1.0
    last, g_last = grad_of(z, y, lin, progress_of(k_end - 1, k_end))
    through, g_through = grad_of(z, y, thr)
    for a, b in zip(last, through):
        assert torch.equal(a, b)
    assert torch.equal(g_last, g_through)
    mid = loss(z, y, lin, progress_of(10, k_end))
    torch.testing.assert_close(mid.edge_loss, through.edge_loss * (10 / 49))


def test_neg_linear_gate():
    z, y = _two_slot()
    base = loss(z, y, [EdgeSpec(src=0, dst=1, loss="cos"), EdgeSpec(src=LABEL, dst=1, loss="ce")])
    for p in (0.0, 0.3, 1.0):
        out = loss(z, y, [EdgeSpec(src=0, dst=1, loss="cos", gate="neg_linear"),
                          EdgeSpec(src=LABEL, dst=1, loss="ce", gate="neg_linear")], p)
        torch.testing.assert_close(out.edge_loss, (1 - p) * base.edge_loss, atol=1e-15, rtol=1e-13)
        assert (out.count == (6 if p < 1 else 0)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_sine_gate_special_cases(dtype):
    z, y = _two_slot(dtype=dtype)
    kinds = ["kl", "ce_label", "cos", "pl"]

    def edges(gate, **kw):
        return [make_edge(k, gate, 0, 1, T=1.5, **kw) for k in kinds]

    def run(es, p):
        return grad_of(z, y, es, p, f=lambda o: o.node_loss.sum())

    for p in (0.0, 0.4, 1.0):
        s_out, s_g = run(edges("sine", f=0.0, phi=math.pi / 2), p)
        t_out, t_g = run(edges("through"), p)
        for a, b in zip(s_out, t_out):
            assert torch.equal(a, b)  # weight exactly 1
        assert torch.equal(s_g, t_g)
        c_out, c_g = run(edges("sine", f=0.0, phi=3 * math.pi / 2), p)
        assert torch.equal(c_out.edge_loss, torch.zeros_like(c_out.edge_loss))
        assert torch.equal(c_out.count, torch.zeros_like(c_out.count))
        assert torch.equal(c_g, torch.zeros_like(c_g))
    # (0.5, 3pi/2): 0.5 - 0.5 cos(pi p), which equals Linear at p in {0, 1/2, 1}
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-14, rtol=1e-12)
    for p in (0.0, 0.5, 1.0, 0.25):
        s = loss(z, y, edges("sine", f=0.5, phi=3 * math.pi / 2), p)
        lin = loss(z, y, edges("linear"), p)
        thr = loss(z, y, edges("through"), p)
        w = 0.5 - 0.5 * math.cos(math.pi * p)
        torch.testing.assert_close(s.edge_loss, w * thr.edge_loss, **tol)
        if p != 0.25:
            torch.testing.assert_close(s.edge_loss, lin.edge_loss, **tol)


def test_sine_gate_general_value():
    z, y = _two_slot()
    f, phi, p = 0.8, 1.1, 0.35
    out = loss(z, y, [EdgeSpec(src=0, dst=1, loss="kl", gate="sine", f=f, phi=phi)], p)
    thr = loss(z, y, [EdgeSpec(src=0, dst=1, loss="kl")], p)
    w = 0.5 + 0.5 * math.sin(2 * math.pi * f * p + phi)
    torch.testing.assert_close(out.edge_loss, w * thr.edge_loss, atol=1e-15, rtol=1e-13)


def test_threshold_gate_by_hand():
    B, C = 6, 3
    probs = torch.tensor([[0.97, 0.02, 0.01], [0.5, 0.3, 0.2], [0.1, 0.85, 0.05],
                          [0.01, 0.01, 0.98], [0.6, 0.2, 0.2], [0.2, 0.2, 0.6]],
                         dtype=torch.float64)
    zs = probs.log() + 3.0  # a shift must not matter
    z = torch.stack([zs, torch.randn(B, C, dtype=torch.float64)])
    y = torch.randint(0, C, (B,))
    for tau, expect in ((0.95, [0, 3]), (0.55, [0, 2, 3, 4, 5]), (0.9, [0, 3])):
        for kind in ("pl", "kl", "cos"):
            out, g = grad_of(z, y, [EdgeSpec(src=0, dst=1, loss=kind, gate="threshold", tau=tau, T=2.0)],
                             reduction="mean")
            mask = torch.zeros(B, dtype=torch.bool)
            mask[expect] = True
            assert int(out.count[0]) == len(expect)
            assert torch.equal(g[1, ~mask], torch.zeros(int((~mask).sum()), C,
                                                        dtype=torch.float64))
            thr, _ = grad_of(z, y, [EdgeSpec(src=0, dst=1, loss=kind, T=2.0)], reduction="sum")
            # per-sample losses of the through edge, by running it on one sample at a time
            per = torch.stack([loss(z[:, n:n + 1], y[n:n + 1], [EdgeSpec(src=0, dst=1, loss=kind, T=2.0)],
                                    reduction="sum").edge_loss[0] for n in range(B)])
            torch.testing.assert_close(thr.edge_loss[0], per.sum())
            torch.testing.assert_close(out.edge_loss[0], per[mask].sum() / B)
    # from the label, Threshold always passes
    assert int(loss(z, y, [EdgeSpec(src=LABEL, dst=1, loss="ce", gate="threshold", tau=1.0)]).count[0]) == B


@pytest.mark.parametrize("kind", list(KINDS))
def test_cutoff_edge_contributes_nothing(kind):
    B, C = 5, 4
    z = random_logits(3, B, C)
    y = torch.randint(0, C, (B,))
    live = [EdgeSpec(src=1, dst=0, loss="kl"), EdgeSpec(src=LABEL, dst=1, loss="ce")]
    cut = make_edge(kind, "cutoff", 0, 2, T=3.0)
    with_cut, g_with = grad_of(z, y, live + [cut], f=lambda o: o.node_loss.sum()
                               + o.edge_loss.sum())
    without, g_without = grad_of(z, y, live, f=lambda o: o.node_loss.sum() + o.edge_loss.sum())
    assert with_cut.edge_loss[2] == 0 and with_cut.count[2] == 0
    assert torch.equal(with_cut.edge_loss[:2], without.edge_loss)
    assert torch.equal(with_cut.node_loss, without.node_loss)
    assert torch.equal(g_with, g_without)
    assert torch.equal(g_with[2], torch.zeros(B, C))
    # nothing is computed for it: garbage in its destination does not leak out
    z_bad = z.clone()
    z_bad[2] = math.nan
    bad, g_bad = grad_of(z_bad, y, live + [cut], f=lambda o: o.node_loss.sum() + o.edge_loss.sum())
    assert torch.equal(bad.edge_loss, with_cut.edge_loss)
    assert torch.equal(g_bad, g_with)


@pytest.mark.parametrize("src", [0, LABEL])
def test_kl_t2_scales_by_t_squared(src):
    z, y = _two_slot(dtype=torch.float32)
    a, ga = grad_of(z, y, [EdgeSpec(src=src, dst=1, loss="kl", T=2.0, t2=True)],
                    f=lambda o: o.edge_loss.sum())
    b, gb = grad_of(z, y, [EdgeSpec(src=src, dst=1, loss="kl", T=2.0, t2=False)],
                    f=lambda o: o.edge_loss.sum())
    torch.testing.assert_close(a.edge_loss, 4 * b.edge_loss, atol=0, rtol=1e-6)
    torch.testing.assert_close(ga, 4 * gb, atol=0, rtol=1e-6)
    # t2 only scales KL
    c = loss(z, y, [EdgeSpec(src=0, dst=1, loss="cos", T=2.0, t2=True)]).edge_loss
    d = loss(z, y, [EdgeSpec(src=0, dst=1, loss="cos", T=2.0, t2=False)]).edge_loss
    assert torch.equal(c, d)


def test_argmax_ties_resolve_to_first_index():
    B, C = 4, 5
    zs = torch.tensor([[3.0, 3.0, 1.0, 0.0, 3.0],
                       [0.0, 2.0, 2.0, 2.0, 1.0],
                       [1.0, 1.0, 1.0, 1.0, 1.0],
                       [-1.0, 0.0, 5.0, 0.0, 5.0]], dtype=torch.float64)
    first = torch.tensor([0, 1, 0, 2])
    zt = torch.randn(B, C, dtype=torch.float64)
    z = torch.stack([zs, zt])
    # Correct: the label equal to the first tied index passes, another tied one fails
    assert int(loss(z, first, [EdgeSpec(src=0, dst=1, loss="kl", gate="correct")]).count[0]) == B
    other = torch.tensor([1, 2, 3, 4])
    assert int(loss(z, other, [EdgeSpec(src=0, dst=1, loss="kl", gate="correct")]).count[0]) == 0
    # PL: cross-entropy to the first tied index
    out = loss(z, first, [EdgeSpec(src=0, dst=1, loss="pl", T=1.5)])
    torch.testing.assert_close(out.edge_loss[0], F.cross_entropy(zt / 1.5, first))
    check_against_reference(z, other, [EdgeSpec(src=0, dst=1, loss="pl"),
                                       EdgeSpec(src=0, dst=1, loss="kl", gate="correct")])


def test_count_and_mean_divisor():
    """Masked sums are divided by the whole batch under mean; count is per edge."""
    z, y = _two_slot(B=6)
    y = z[0].argmax(-1).clone()
    y[:4] = (y[:4] + 1) % 4
    m = loss(z, y, [EdgeSpec(src=0, dst=1, loss="pl", gate="correct")], reduction="mean")
    s = loss(z, y, [EdgeSpec(src=0, dst=1, loss="pl", gate="correct")], reduction="sum")
    assert int(m.count[0]) == int(s.count[0]) == 2
    torch.testing.assert_close(m.edge_loss * 6, s.edge_loss, atol=1e-15, rtol=1e-14)


# ---------------------------------------------------------------------------
# 8. Progress as a tensor.

@pytest.mark.parametrize("p", [0.0, 0.3, 0.25, 1.0])
def test_progress_tensor_equals_float(p):
    z = random_logits(3, 5, 6)
    y = labels_half_correct(z[0], 6)
    edges = full_graph(3)
    a = loss(z, y, edges, p)
    tensors = [torch.tensor(p, dtype=torch.float64), torch.tensor([p], dtype=torch.float64)]
    if float(torch.tensor(p, dtype=torch.float32)) == p:  # exactly representable
        tensors.append(torch.tensor(p, dtype=torch.float32))
    for pt in tensors:
        b = loss(z, y, edges, pt)
        for u, v in zip(a, b):
            assert torch.equal(u, v)
    with pytest.raises(ValueError, match="progress must be a scalar"):
        loss(z, y, edges, torch.tensor([0.1, 0.2]))


# A gate weight that is not > 0 (progress outside [0, 1], or NaN) closes the gate.
@pytest.mark.parametrize("gate,p", [("neg_linear", 1.5), ("linear", -0.5),
                                    ("linear", math.nan)])
def test_out_of_range_progress_matches_reference(gate, p):
    z = random_logits(2, 4, 5)
    y = torch.randint(0, 5, (4,))
    edges = [EdgeSpec(src=0, dst=1, loss="kl", gate=gate)]
    out = loss(z, y, edges, p)
    exp = ref.gated_edge_loss(z, y, edges, p)
    assert torch.equal(out.count, exp.count)
    torch.testing.assert_close(out.edge_loss, exp.edge_loss)


# ---------------------------------------------------------------------------
# 9. Bad inputs.

def test_bad_shapes():
    z = random_logits(2, 4, 5)
    edges = [EdgeSpec(src=0, dst=1)]
    with pytest.raises(RuntimeError, match=r"labels must be \(B,\) with B = .*4.*\[3\]"):
        loss(z, torch.zeros(3, dtype=torch.long), edges)
    with pytest.raises(RuntimeError, match=r"labels must be \(B,\)"):
        loss(z, torch.zeros(4, 1, dtype=torch.long), edges)
    with pytest.raises(ValueError, match=r"logits must be \(M, B, C\), got shape \(4, 5\)"):
        loss(z[0], torch.zeros(4, dtype=torch.long), edges)
    with pytest.raises(RuntimeError, match="labels must be int64"):
        loss(z, torch.zeros(4, dtype=torch.int32), edges)
    with pytest.raises(RuntimeError, match="dtype must be float32, float64, float16 or bfloat16"):
        loss(z.to(torch.int64), torch.zeros(4, dtype=torch.long), edges)
    with pytest.raises(RuntimeError, match=r"at least one class"):
        loss(z[..., :0], torch.zeros(4, dtype=torch.long), edges)


def test_bad_edges_through_the_wrapper():
    z = random_logits(3, 4, 5)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"dst = 5 .*0\.\.2"):
        loss(z, y, [EdgeSpec(src=0, dst=5)])
    with pytest.raises(ValueError, match=r"src = 7 .*'label' or 0\.\.2"):
        loss(z, y, [EdgeSpec(src=7, dst=1)])
    with pytest.raises(ValueError, match=r"unknown edges\[1\]\.loss 'mse'; allowed: kl, ce, cos, pl"):
        loss(z, y, [EdgeSpec(src=0, dst=1), EdgeSpec(src=0, dst=1, loss="mse")])
    with pytest.raises(ValueError, match="unknown edges\\[0\\].gate 'open'; allowed: through, "
                                         "cutoff, linear, neg_linear, correct, sine, threshold"):
        loss(z, y, [EdgeSpec(src=0, dst=1, gate="open")])
    for T in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"\.T = .*must be a finite number > 0"):
            loss(z, y, [EdgeSpec(src=0, dst=1, T=T)])
    with pytest.raises(ValueError, match="built for 2 nodes but logits have 3"):
        loss(z, y, EdgeTable([EdgeSpec(src=0, dst=1)], 2))


def test_labels_out_of_range():
    z = random_logits(2, 4, 5)
    for bad in (5, -1, 17):
        y = torch.tensor([0, 1, bad, 2])
        with pytest.raises(RuntimeError, match=f"label {bad} of sample 2 is out of range; "
                                               r"allowed: \[0, 5\)"):
            loss(z, y, [EdgeSpec(src=LABEL, dst=1, loss="ce")])
        with pytest.raises(RuntimeError, match=f"label {bad} "):
            loss(z, y, [EdgeSpec(src=0, dst=1, loss="pl", gate="correct")])
        # the backward op checks as well
        y_ok = torch.tensor([0, 1, 2, 2])
        args = raw_args(z, y_ok, [EdgeSpec(src=LABEL, dst=1, loss="ce")])
        with pytest.raises(RuntimeError, match=f"label {bad} "):
            OP_BWD(torch.ones(1), args[0], y, *args[2:])
    # labels that no edge reads are not checked (semi-supervised unlabelled batch)
    y = torch.tensor([0, 1, 99, 2])
    out = loss(z, y, [EdgeSpec(src=0, dst=1, loss="kl"), EdgeSpec(src=0, dst=1, loss="pl", gate="threshold"),
                      EdgeSpec(src=LABEL, dst=0, loss="ce", gate="cutoff")])
    assert torch.isfinite(out.edge_loss).all()


def test_bad_reduction():
    z = random_logits(2, 4, 5)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown reduction 'avg'; allowed: mean, sum"):
        loss(z, y, [EdgeSpec(src=0, dst=1)], reduction="avg")
    args = list(raw_args(z, y, [EdgeSpec(src=0, dst=1)]))
    args[-1] = 2
    with pytest.raises(RuntimeError, match="reduction must be 0 \\(mean\\) or 1 \\(sum\\), got 2"):
        OP(*args)


def _raw(edge_index, edge_params=None, M=3, B=4, C=5):
    z = random_logits(M, B, C)
    y = torch.zeros(B, dtype=torch.long)
    ei = torch.tensor(edge_index, dtype=torch.int32).reshape(-1, 4)
    if edge_params is None:
        edge_params = [[1.0, 1.0, 0.0, 0.0]] * ei.shape[0]
    ep = torch.tensor(edge_params, dtype=torch.float64).reshape(-1, 4)
    return z, y, ei, ep, torch.tensor(0.5, dtype=torch.float64)


@pytest.mark.parametrize("edge_index,edge_params,pattern", [
    ([[3, 1, 0, 0]], None, r"edge 0 has source 3; allowed: -1 \(label\) or a node in \[0, 3\)"),
    ([[0, 1, 0, 0], [-2, 1, 0, 0]], None, r"edge 1 has source -2"),
    ([[0, 3, 0, 0]], None, r"edge 0 has destination 3; allowed: a node in \[0, 3\)"),
    ([[0, 1, 4, 0]], None, r"edge 0 has loss kind 4; allowed: 0 kl, 1 ce, 2 cos, 3 pl"),
    ([[0, 1, 0, 7]], None, r"edge 0 has gate kind 7; allowed: 0 through, 1 cutoff"),
    ([[0, 1, 0, -1]], None, r"edge 0 has gate kind -1"),
    ([[0, 1, 0, 0]], [[0.0, 1.0, 0.0, 0.0]], r"edge 0 has temperature 0; it must be a finite"),
    ([[0, 1, 0, 0]], [[math.nan, 1.0, 0.0, 0.0]], r"edge 0 has temperature nan"),
    ([[-1, 1, 2, 0]], None, r"edge 0 goes from the label with loss kind 2"),
    ([[0, 1, 1, 0]], None, r"edge 0 has loss ce but source node 0"),
])
def test_raw_op_bad_edge_table(edge_index, edge_params, pattern):
    z, y, ei, ep, prog = _raw(edge_index, edge_params)
    with pytest.raises(RuntimeError, match=pattern):
        OP(z, y, ei, ep, prog, 0)
    with pytest.raises(RuntimeError, match=pattern):
        OP_BWD(torch.ones(ei.shape[0]), z, y, ei, ep, prog, 0)


def test_raw_op_bad_metadata():
    z, y, ei, ep, prog = _raw([[0, 1, 0, 0]])
    with pytest.raises(RuntimeError, match=r"edge_index must be int32 \(E, 4\).*Long"):
        OP(z, y, ei.long(), ep, prog, 0)
    with pytest.raises(RuntimeError, match=r"edge_index must be int32 \(E, 4\).*\[1, 3\]"):
        OP(z, y, ei[:, :3], ep, prog, 0)
    with pytest.raises(RuntimeError, match=r"edge_params must be float64 \(E, 4\).*Float"):
        OP(z, y, ei, ep.float(), prog, 0)
    with pytest.raises(RuntimeError, match=r"E = edge_index.size\(0\) = 1, got .*\[2, 4\]"):
        OP(z, y, ei, torch.cat([ep, ep]), prog, 0)
    with pytest.raises(RuntimeError, match="progress must be a one-element float64 tensor.*Float"):
        OP(z, y, ei, ep, prog.float(), 0)
    with pytest.raises(RuntimeError, match="progress must be a one-element.*with 2 elements"):
        OP(z, y, ei, ep, torch.zeros(2, dtype=torch.float64), 0)
    with pytest.raises(RuntimeError, match=r"grad_edge must be \(E,\) with E = 1, got \[2\]"):
        OP_BWD(torch.ones(2), z, y, ei, ep, prog, 0)
    with pytest.raises(RuntimeError, match=r"logits must be \(M, B, C\).*\[3, 4\]"):
        OP(z[..., 0], y, ei, ep, prog, 0)


# ---------------------------------------------------------------------------
# 10. Determinism.

@pytest.mark.parametrize("M,B,C", [(4, 512, 10), (3, 64, 1000)])
def test_deterministic_and_thread_count_independent(M, B, C):
    z = random_logits(M, B, C)
    y = labels_half_correct(z[0], C)
    edges = full_graph(M, tau=split_tau(z[0]))
    ws = weightings(len(edges), M)

    def run():
        out, g = run_with_grads(ops.gated_edge_loss, z, y, edges, 0.7, "mean", ws)
        return [t.detach() for t in out] + g

    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    results = run_at_thread_counts(run, (1, 2))
    for a, b in zip(results[1], results[2]):
        assert torch.equal(a, b)
    for a, b in zip(results[1], first):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# 13. CUDA against CPU.

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCUDA:
    @pytest.fixture(autouse=True)
    def _need_cuda_build(self):
        if not cuda_built():
            pytest.skip("ktgfast._C was built without CUDA kernels")

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16,
                                       torch.bfloat16])
    @pytest.mark.parametrize("M,B,C", [(1, 3, 1), (3, 64, 100), (4, 5, 1000), (2, 33, 4097)])
    def test_cuda_matches_cpu(self, dtype, M, B, C):
        z = random_logits(M, B, C, dtype, scale=3.0)
        y = labels_half_correct(z[0].double(), C)
        edges = full_graph(M, tau=split_tau(z[0]))
        ws = weightings(len(edges), M)
        out_c, g_c = run_with_grads(ops.gated_edge_loss, z, y, edges, 0.6, "mean", ws)
        table = EdgeTable(edges, M, "cuda")
        prog = torch.tensor(0.6, dtype=torch.float64, device="cuda")
        out_g, g_g = run_with_grads(ops.gated_edge_loss, z.cuda(), y.cuda(), table, prog, "mean",
                                    ws)
        lowp = dtype in (torch.float16, torch.bfloat16)
        tol = dict(atol=1e-10, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-5, rtol=1e-4)
        assert torch.equal(out_g.count.cpu(), out_c.count)
        torch.testing.assert_close(out_g.edge_loss.cpu(), out_c.edge_loss, **tol)
        torch.testing.assert_close(out_g.node_loss.cpu(), out_c.node_loss, **tol)
        for a, b in zip(g_g, g_c):
            assert a.dtype == dtype and a.device.type == "cuda"
            if lowp:  # one rounding of a float result apart at most
                eps = torch.finfo(dtype).eps
                torch.testing.assert_close(a.cpu().double(), b.double(),
                                           atol=eps * float(b.abs().max()) + 1e-7, rtol=eps)
            else:
                torch.testing.assert_close(a.cpu(), b, **tol)

    def test_cuda_non_contiguous_and_deterministic(self):
        M, B, C = 3, 16, 50
        base = torch.randn(C, B, M, device="cuda")
        z = base.permute(2, 1, 0)
        y = torch.randint(0, C, (B,), device="cuda")
        edges = full_graph(M)
        a = ops.gated_edge_loss(z, y, edges, 0.3)
        b = ops.gated_edge_loss(z, y, edges, 0.3)
        for u, v in zip(a, b):
            assert torch.equal(u, v)
        c = ops.gated_edge_loss(z.cpu(), y.cpu(), edges, 0.3)
        torch.testing.assert_close(a.edge_loss.cpu(), c.edge_loss, atol=2e-5, rtol=1e-4)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_cuda_opcheck(self, dtype):
        args, E = _opcheck_case(dtype)
        args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
        args = (args[0].detach().requires_grad_(True), *args[1:])
        torch.library.opcheck(OP, args)
        bargs = (args[0].detach(), *args[1:])
        torch.library.opcheck(OP_BWD, (torch.randn(E, device="cuda"), *bargs))

    def test_cuda_device_mismatch(self):
        z = torch.randn(2, 3, 4, device="cuda")
        y = torch.zeros(3, dtype=torch.long)
        args = raw_args(z, y.cuda(), [EdgeSpec(src=0, dst=1)])
        with pytest.raises(RuntimeError, match="all tensors must be on cuda"):
            OP(z, y, *args[2:])
