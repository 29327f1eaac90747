"""Tests of the fused attention-crop op (ktgfast.ops.attention_crop_loss, the raw
torch.ops.ktgfast ops, their fake kernels and autograd) against the pure-PyTorch
reference (ktgfast.reference.attention_crop_loss), hand-computed crops and the
border rule."""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

import ktgfast.ops as ops
import ktgfast.reference as ref
from ktgfast import EdgeSpec, EdgeTable
from ktgfast.edges import REDUCTIONS, AttentionEdgeTable
from ktgfast.ops.attention_crop import PULL_NORMS
from support.ops import (GATES, assert_close_outputs, assert_fake_kernels_match,
                         assert_matches_reference, cuda_built, gate_kwargs, labels_half_correct,
                         maxprob, random_logits, run_at_thread_counts, run_op_with_grads, split_tau,
                         weightings)

# ---------------------------------------------------------------------------
# Helpers of this op: edge builders, random maps, running the op and the
# reference with gradients (the op-independent ones are in tests/support/ops.py).

LOSSES = ("pull", "push")


def make_edge(loss: str, gate: str, src: int, dst: int, tau: float = 0.5, **kw) -> EdgeSpec:
    return EdgeSpec(src=src, dst=dst, loss=loss, gate=gate, **{**gate_kwargs(gate, tau), **kw})


def random_maps(M, B, H, W, dtype=torch.float32, scale=1.0):
    """Attention-like maps: positive, no ties (AT maps are sums of squares)."""
    return (torch.rand(M, B, H, W, dtype=torch.float64) * scale).to(dtype)


def full_graph(M: int, offset: int = 0, tau: float = 0.5) -> list[EdgeSpec]:
    """An edge for every ordered pair of slots plus a self-loop on slot 0,
    cycling through pull / push, every gate and a few weights."""
    pairs = [(s, t) for s in range(M) for t in range(M) if s != t] + [(0, 0)]
    return [make_edge(LOSSES[i % 2], GATES[(i + offset) % len(GATES)], s, t, tau=tau,
                      weight=0.5 + 0.5 * ((i + offset) % 4))
            for i, (s, t) in enumerate(pairs)]


def run_with_grads(fn: Callable, base: torch.Tensor, logits, labels, edges, progress=0.0,
                   crop_sizes=(3, 5, 7), reduction="mean", pull="mean", ws=None,
                   view: Callable | None = None):
    """(outputs, [grad w.r.t. ``base`` for each weighting]) of ``fn`` applied to
    ``view(base)`` (default: base itself), on a fresh leaf copy of ``base``."""
    return run_op_with_grads(
        lambda inp: fn(inp, logits, labels, edges, progress, crop_sizes, reduction, pull), base, ws,
        view)


def tolerances(dtype):
    return dict(atol=1e-12, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-5, rtol=1e-4)


def check_against_reference(maps, logits, labels, edges, progress=0.0, crop_sizes=(3, 5, 7),
                            reduction="mean", pull="mean", atol=None, rtol=None, view=None):
    """Op vs reference: outputs, and the gradients of every upstream weighting.
    Both run on ``view(maps)`` (default: the maps themselves); gradients are
    taken w.r.t. ``maps``."""
    dt = maps.dtype
    tol = tolerances(dt)
    atol = tol["atol"] if atol is None else atol
    rtol = tol["rtol"] if rtol is None else rtol
    E = len(edges)
    M = (maps if view is None else view(maps)).shape[0]
    ws = weightings(E, M)
    args = (logits, labels, edges, progress, crop_sizes, reduction, pull, ws, view)
    out, g = run_with_grads(ops.attention_crop_loss, maps, *args)
    exp, ge = run_with_grads(ref.attention_crop_loss, maps, *args)
    assert_matches_reference(out, g, exp, ge, E, M, dt, atol, rtol)
    return out, g


def raw_args(maps, logits, labels, edges, progress=0.0, crop_sizes=(3, 5, 7), reduction="mean",
             pull="mean"):
    """The positional arguments of torch.ops.ktgfast.attention_crop_loss."""
    table = edges if isinstance(edges, EdgeTable) else AttentionEdgeTable(edges, maps.shape[0])
    table = table.to(maps.device)
    prog = torch.tensor(float(progress), dtype=torch.float64, device=maps.device)
    return (maps, logits, labels, table.edge_index, table.edge_params, prog, list(crop_sizes),
            REDUCTIONS[reduction], PULL_NORMS[pull])


# Without the extension this module cannot run: fail collection with the build hint.
ops._require_extension()

OP = torch.ops.ktgfast.attention_crop_loss.default
OP_BWD = torch.ops.ktgfast.attention_crop_loss_backward.default


def loss(q, z, y, edges, progress=0.0, crop_sizes=(3, 5, 7), reduction="mean", pull="mean"):
    return ops.attention_crop_loss(q, z, y, edges, progress, crop_sizes, reduction, pull)


def grad_of(q, z, y, edges, progress=0.0, crop_sizes=(3, 5, 7), reduction="mean", pull="mean",
            f=lambda o: o.node_loss.sum()):
    x = q.detach().clone().requires_grad_(True)
    out = loss(x, z, y, edges, progress, crop_sizes, reduction, pull)
    f(out).backward()
    return out, x.grad


def case(M, B, H, W, C=6, dtype=torch.float32):
    q = random_maps(M, B, H, W, dtype)
    z = random_logits(M, B, C, dtype)
    return q, z


# ---------------------------------------------------------------------------
# 1. Forward and gradient equal the reference.

LOSS_GATE = [(l, g) for l in LOSSES for g in GATES]
HW = [(1, 1), (2, 2), (5, 5), (7, 7), (8, 8), (16, 16), (5, 8), (16, 7), (1, 7), (8, 2)]
CROPS = [(3, 5, 7), (3, 7, 11), (1,), (4,), (9, 2)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind,gate", LOSS_GATE, ids=[f"{k}-{g}" for k, g in LOSS_GATE])
def test_loss_gate_matches_reference(kind, gate, dtype):
    i = LOSS_GATE.index((kind, gate)) + (dtype == torch.float64)
    M = 2 + i % 4
    B = (1, 3, 17)[i % 3] if gate not in ("correct", "threshold") else (3, 17)[i % 2]
    H, W = HW[i % len(HW)]
    crops = CROPS[i % len(CROPS)]
    reduction = ("mean", "sum")[i % 2]
    pull = ("mean", "sum")[(i // 2) % 2]
    progress = (0.37, 0.81)[i % 2]
    C = 5
    q, z = case(M, B, H, W, C, dtype)
    src, dst, src2 = i % M, (i + 1) % M, (i + 2) % M
    y = labels_half_correct(z[src], C)
    tau = split_tau(z[src])
    edges = [
        make_edge(kind, gate, src, dst, tau=tau, weight=1.5),
        # a second edge into the same destination, the other loss
        make_edge(LOSSES[1 - LOSSES.index(kind)], gate, src2, dst, tau=tau, weight=0.75),
        make_edge("pull", "through", dst, src),
    ]
    out, _ = check_against_reference(q, z, y, edges, progress, crops, reduction, pull)
    n_pass = int(out.count[0])
    if gate == "cutoff":
        assert n_pass == 0 and out.edge_loss[0] == 0
    elif gate == "threshold":
        assert n_pass == int((maxprob(z[src]) > tau).sum())
        assert 0 < n_pass < B
    elif gate == "correct":
        assert n_pass == int((z[src].argmax(-1) == y).sum()) >= (B + 1) // 2
    else:
        assert n_pass == B


# (M, B, H, W, crop sizes): M 2..5, B in {1, 3, 17}, odd and non-square maps,
# crops smaller and larger than the map
SHAPES = [
    (2, 17, 16, 16, (3, 7, 11)),
    (3, 3, 8, 8, (3, 5, 7)),
    (4, 1, 5, 7, (3, 5, 7)),
    (5, 3, 7, 2, (1,)),
    (2, 3, 2, 16, (4,)),
    (3, 17, 1, 1, (3, 5, 7)),
    (4, 3, 16, 5, (20, 3)),
]


@pytest.mark.parametrize("reduction,pull", [("mean", "mean"), ("sum", "sum"), ("mean", "sum")])
@pytest.mark.parametrize("M,B,H,W,crops", SHAPES,
                         ids=[f"M{m}-B{b}-{h}x{w}-k{'_'.join(map(str, k))}" for m, b, h, w, k in SHAPES])
def test_full_graph_matches_reference(M, B, H, W, crops, reduction, pull):
    q, z = case(M, B, H, W, C=4)
    y = labels_half_correct(z[0], 4)
    edges = full_graph(M, offset=M + B + H, tau=split_tau(z[0]))
    check_against_reference(q, z, y, edges, 0.6, crops, reduction, pull)


def test_full_graph_float64_mixed_table():
    """Several edges of mixed kinds and gates into every destination, float64."""
    M, B, H, W = 4, 5, 7, 6
    q, z = case(M, B, H, W, C=3, dtype=torch.float64)
    y = labels_half_correct(z[1], 3)
    edges = full_graph(M, tau=split_tau(z[1])) + full_graph(M, offset=3, tau=split_tau(z[1]))
    check_against_reference(q, z, y, edges, 0.3, (3, 7, 11), "sum", "mean")


def test_edge_table_and_spec_list_agree():
    q, z = case(3, 4, 6, 6)
    y = torch.randint(0, 6, (4,))
    edges = full_graph(3)
    a = loss(q, z, y, edges, 0.4)
    b = loss(q, z, y, AttentionEdgeTable(edges, 3), 0.4)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_edge_alone_equals_edge_in_graph():
    """Nothing leaks between the edges of one destination row: each edge's loss
    and count in the graph equal those of the edge alone, bitwise, in any order."""
    M, B, H, W = 4, 6, 8, 8
    q, z = case(M, B, H, W)
    y = labels_half_correct(z[0], 6)
    edges = full_graph(M, tau=split_tau(z[0])) + [
        make_edge("push", "cutoff", 2, 1), make_edge("pull", "threshold", 3, 1, tau=split_tau(z[3]))]
    together = loss(q, z, y, edges, 0.5)
    perm = torch.randperm(len(edges)).tolist()
    shuffled = loss(q, z, y, [edges[i] for i in perm], 0.5)
    for i, e in enumerate(edges):
        alone = loss(q, z, y, [e], 0.5)
        assert torch.equal(together.edge_loss[i:i + 1], alone.edge_loss), (i, e)
        assert torch.equal(together.count[i:i + 1], alone.count), (i, e)
    assert torch.equal(shuffled.edge_loss, together.edge_loss[perm])
    assert torch.equal(shuffled.count, together.count[perm])


def test_no_edges():
    q, z = case(2, 4, 5, 5)
    q.requires_grad_(True)
    out = loss(q, z, torch.zeros(4, dtype=torch.long), [])
    assert out.edge_loss.shape == (0,) and out.count.shape == (0,)
    assert torch.equal(out.node_loss, torch.zeros(2))
    out.node_loss.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q))


def test_only_destinations_get_gradient():
    """Sources are detached; logits are never differentiated."""
    q, z = case(4, 6, 7, 7)
    z.requires_grad_(True)
    y = torch.randint(0, 6, (6,))
    edges = [EdgeSpec(src=0, dst=2, loss="pull"),
             EdgeSpec(src=1, dst=2, loss="push", gate="threshold", tau=0.2),
             EdgeSpec(src=1, dst=3, loss="pull", gate="correct")]
    y[:3] = z[1, :3].argmax(-1)
    for f in weightings(len(edges), 4):
        _, g = grad_of(q, z, y, edges, f=f)
        assert torch.equal(g[:2], torch.zeros_like(g[:2]))
        assert g[2].abs().sum() > 0 and g[3, :3].abs().sum() > 0
    out = loss(q, z, y, edges)
    assert not out.count.requires_grad
    assert torch.autograd.grad(out.node_loss.sum(), z, allow_unused=True)[0] is None


def test_backward_op_matches_saved_gradient():
    """The backward op with unit weights reproduces the forward's gradient
    output bitwise, and with a one-hot weight the gradient of that edge alone."""
    q, z = case(3, 5, 8, 8)
    y = labels_half_correct(z[0], 6)
    edges = full_graph(3)
    args = raw_args(q, z, y, edges, 0.5)
    _, _, _, grad = OP(*args)
    E = len(edges)
    assert torch.equal(OP_BWD(torch.ones(E), *args), grad)
    for e in (0, 3, E - 1):
        w = torch.zeros(E)
        w[e] = 1
        _, g = grad_of(q, z, y, edges, 0.5, f=lambda o, e=e: o.edge_loss[e])
        torch.testing.assert_close(OP_BWD(w, *args), g, atol=0, rtol=0)
        _, gr = run_with_grads(ref.attention_crop_loss, q, z, y, edges, 0.5,
                               ws=[lambda o, e=e: o.edge_loss[e]])
        torch.testing.assert_close(g, gr[0], atol=2e-6, rtol=1e-4)


# ---------------------------------------------------------------------------
# 2. Crop windows and the arg-max: the border rule by hand.

def in_layout(q: torch.Tensor, layout: str) -> torch.Tensor:
    """``q`` (M, B, H, W) stored column-major ("transposed") or as a slice of
    wider rows ("sliced": map rows apart in memory, unit column stride)."""
    if layout == "transposed":
        return q.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "sliced":
        wide = torch.full((*q.shape[:3], q.shape[3] + 3), 7.0, dtype=q.dtype)
        wide[..., 1:-2] = q
        return wide[..., 1:-2]
    return q


LAYOUTS = ["contiguous", "transposed", "sliced"]


def touched(src: torch.Tensor, k: int, layout: str = "contiguous") -> torch.Tensor:
    """The destination cells that receive gradient from one pull edge whose
    source map is ``src`` (H, W), with crop size ``k``: the crop window.  The
    destination is tiny (norm < eps): F.normalize then divides by eps and no
    projection removes the gradient, so even a one-cell window shows."""
    H, W = src.shape
    dst = (torch.rand(H, W, dtype=torch.float64) + 0.5) * 1e-15
    q = in_layout(torch.stack([src.double(), dst])[:, None], layout)  # (2, 1, H, W)
    z = torch.zeros(2, 1, 2, dtype=torch.float64)
    _, g = grad_of(q, z, torch.zeros(1, dtype=torch.long), [EdgeSpec(src=0, dst=1, loss="pull")],
                   crop_sizes=(k,))
    return g[1, 0] != 0


def window_of(H, W, peak, k, layout="contiguous"):
    src = torch.rand(H, W, dtype=torch.float64) + 0.5
    src[peak] = 2.0
    return touched(src, k, layout)


def box(H, W, rows, cols):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


# (peak, crop size, expected rows [start, stop), expected cols) on a 5 x 7 map
WINDOWS_5x7 = [
    ((0, 0), 3, (0, 3), (0, 3)),   # top-left corner: shifted right and down
    ((4, 6), 3, (2, 5), (4, 7)),   # bottom-right corner: shifted up and left
    ((2, 3), 3, (1, 4), (2, 5)),   # inside: centred
    ((0, 6), 5, (0, 5), (2, 7)),   # k = H: rows are the whole axis; cols shifted left
    ((4, 0), 4, (1, 5), (0, 4)),   # even size: start c - 2, shifted back inside
    ((1, 1), 4, (0, 4), (0, 4)),
    ((2, 3), 4, (0, 4), (1, 5)),
    ((3, 5), 6, (0, 5), (1, 7)),   # rows: 6 > 5 clipped to the whole axis
    ((3, 5), 9, (0, 5), (0, 7)),   # larger than the map both ways: the whole map
    ((3, 5), 1, (3, 4), (5, 6)),   # a single cell
    ((0, 3), 7, (0, 5), (0, 7)),   # k = W: cols are the whole axis, rows clipped
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("peak,k,rows,cols", WINDOWS_5x7,
                         ids=[f"peak{p[0]}{p[1]}-k{k}" for p, k, _, _ in WINDOWS_5x7])
def test_crop_window_border_rule(peak, k, rows, cols, layout):
    got = window_of(5, 7, peak, k, layout)
    assert torch.equal(got, box(5, 7, rows, cols)), got.int()
    # and the reference's crop_window agrees with the hand-written windows
    assert ref.crop_window(peak[0], k, 5) == (rows[0], rows[1] - rows[0])
    assert ref.crop_window(peak[1], k, 7) == (cols[0], cols[1] - cols[0])


def test_crop_window_every_center_and_size():
    """Every peak and size on small non-square maps: the window the op uses is
    the reference's crop_window."""
    for H, W in ((3, 4), (1, 5), (6, 2)):
        for i in range(H):
            for j in range(W):
                for k in (1, 2, 3, 4, 5, 7):
                    r0, rh = ref.crop_window(i, k, H)
                    c0, cw = ref.crop_window(j, k, W)
                    got = window_of(H, W, (i, j), k)
                    assert torch.equal(got, box(H, W, (r0, r0 + rh), (c0, c0 + cw))), (H, W, i, j, k)


def test_hand_computed_crops():
    """A 2 x 3 example computed by hand; the source peaks at (0, 0).
    Crop 1: u = [5] / 5 = [1], v = [-2] / 2 = [-1]: pull = (1 - (-1))^2 = 4,
    push = -1.  Crop 2: window rows 0..1, cols 0..1 (start -1 shifted to 0):
    u = [5, 1, 0, 0] / sqrt(26), v = [-2, 3, 4, 0] / sqrt(29).  Crop 5: the
    whole map (clipped), d = 6."""
    src = torch.tensor([[5.0, 1.0, 0.5], [0.0, 0.0, 0.25]], dtype=torch.float64)
    dst = torch.tensor([[-2.0, 3.0, 9.0], [4.0, 0.0, 7.0]], dtype=torch.float64)
    q = torch.stack([src, dst])[:, None]
    z = torch.zeros(2, 1, 3, dtype=torch.float64)
    y = torch.zeros(1, dtype=torch.long)
    u = torch.tensor([5.0, 1.0, 0.0, 0.0], dtype=torch.float64) / math.sqrt(26)
    v = torch.tensor([-2.0, 3.0, 4.0, 0.0], dtype=torch.float64) / math.sqrt(29)
    cos2 = float(u @ v)  # (-10 + 3) / sqrt(26 * 29)
    assert cos2 == pytest.approx(-7 / math.sqrt(26 * 29), rel=1e-14)
    sq2 = float(((u - v) ** 2).sum())  # = 2 - 2 cos2
    assert sq2 == pytest.approx(2 - 2 * cos2, rel=1e-14)

    def edge_loss(kind, crops, pull="mean"):
        return float(loss(q, z, y, [EdgeSpec(src=0, dst=1, loss=kind)], crop_sizes=crops,
                          pull=pull).edge_loss[0])

    assert edge_loss("pull", (1,)) == pytest.approx(4.0, rel=1e-14)
    assert edge_loss("push", (1,)) == pytest.approx(-1.0, rel=1e-14)
    assert edge_loss("pull", (2,), "sum") == pytest.approx(sq2, rel=1e-14)
    assert edge_loss("pull", (2,), "mean") == pytest.approx(sq2 / 4, rel=1e-14)
    assert edge_loss("push", (2,)) == pytest.approx(cos2, rel=1e-14)
    # mean over crop sizes; crop 5 covers the whole 2 x 3 map (d = 6)
    uw = src.reshape(-1) / src.norm()
    vw = dst.reshape(-1) / dst.norm()
    sq6 = float(((uw - vw) ** 2).sum())
    assert edge_loss("pull", (1, 2, 5)) == pytest.approx((4.0 + sq2 / 4 + sq6 / 6) / 3, rel=1e-13)
    # gradient of push at crop 2: (u - cos v) / ||b|| inside the window, 0 outside
    _, g = grad_of(q, z, y, [EdgeSpec(src=0, dst=1, loss="push")], crop_sizes=(2,))
    want = torch.zeros(2, 3, dtype=torch.float64)
    want[:, :2] = ((u - cos2 * v) / math.sqrt(29)).reshape(2, 2)
    torch.testing.assert_close(g[1, 0], want, atol=1e-15, rtol=1e-13)
    assert torch.equal(g[0], torch.zeros_like(g[0]))


# (map, first row-major arg-max)
TIES = [
    (torch.ones(4, 5), (0, 0)),                                   # constant map
    (torch.zeros(4, 5).index_put_((torch.tensor([1, 3]), torch.tensor([2, 0])),
                                  torch.tensor(7.0)), (1, 2)),    # two equal maxima
    (torch.zeros(4, 5).index_put_((torch.tensor([0, 1]), torch.tensor([3, 0])),
                                  torch.tensor(1.0)), (0, 3)),    # column-major would say (1, 0)
    (-torch.arange(20.0).reshape(4, 5) - 1, (0, 0)),              # all negative
    (torch.full((4, 5), -math.inf).index_put_((torch.tensor([2]), torch.tensor([4])),
                                              torch.tensor(-1e30)), (2, 4)),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("src,peak", TIES, ids=["constant", "two_max", "row_major", "negative",
                                                "minus_inf"])
def test_argmax_ties_resolve_to_first_row_major(src, peak, layout):
    assert divmod(int(torch.argmax(src)), 5) == peak  # torch.argmax agrees
    want = torch.zeros(src.shape, dtype=torch.bool)
    want[peak] = True
    assert torch.equal(touched(src, 1, layout), want)
    if not math.isinf(float(src.min())):  # the reference normalises -inf crops to NaN
        q = torch.stack([src.double(), torch.rand(src.shape, dtype=torch.float64)])[:, None]
        q = in_layout(q, layout)
        z = torch.zeros(2, 1, 2, dtype=torch.float64)
        check_against_reference(q, z, torch.zeros(1, dtype=torch.long),
                                [EdgeSpec(src=0, dst=1, loss="pull"),
                                 EdgeSpec(src=0, dst=1, loss="push")], crop_sizes=(3, 2))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_map_peaks_at_first_nan(layout):
    """torch.argmax treats NaN as the maximum: so does the op."""
    src = torch.rand(4, 5, dtype=torch.float64)
    src[0, 3] = 5.0  # the largest number comes before the first NaN
    src[2, 1] = math.nan
    src[3, 4] = math.nan
    assert int(torch.argmax(src)) == 11
    want = torch.zeros(4, 5, dtype=torch.bool)
    want[2, 1] = True  # the NaN gradient there is != 0
    assert torch.equal(touched(src, 1, layout), want)


# ---------------------------------------------------------------------------
# 3. Pull "mean" vs "sum" (the pull carries 1/d, the push not; docs/methods.md).

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_pull_mean_and_sum_differ_by_crop_cells(dtype):
    M, B, H, W = 3, 5, 9, 6
    q, z = case(M, B, H, W, dtype=dtype)
    y = torch.randint(0, 6, (B,))
    edges = [EdgeSpec(src=0, dst=1, loss="pull", weight=1.3),
             EdgeSpec(src=2, dst=1, loss="pull", gate="linear"),
             EdgeSpec(src=1, dst=2, loss="push")]
    # (atol: gradients of two overlapping windows may nearly cancel in a cell)
    tol = dict(atol=1e-16, rtol=1e-12) if dtype == torch.float64 else dict(atol=1e-7, rtol=2e-6)
    per_crop = {}
    for k in (1, 3, 4, 7):
        d = min(k, H) * min(k, W)  # 7 > W: the crop is clipped to 7 x 6
        m, gm = grad_of(q, z, y, edges, 0.4, (k,), pull="mean")
        s, gs = grad_of(q, z, y, edges, 0.4, (k,), pull="sum")
        torch.testing.assert_close(s.edge_loss[:2], d * m.edge_loss[:2], **tol)
        torch.testing.assert_close(gs[1], d * gm[1], **tol)
        assert torch.equal(s.edge_loss[2], m.edge_loss[2])  # push is not normalised
        per_crop[k] = (m.edge_loss[:2], s.edge_loss[:2], d)
    # several sizes: the mean over crops of each crop's term
    m = loss(q, z, y, edges, 0.4, (1, 3, 4, 7), pull="mean").edge_loss[:2]
    s = loss(q, z, y, edges, 0.4, (1, 3, 4, 7), pull="sum").edge_loss[:2]
    torch.testing.assert_close(m, sum(v[0] for v in per_crop.values()) / 4, **tol)
    torch.testing.assert_close(s, sum(v[1] for v in per_crop.values()) / 4, **tol)


# ---------------------------------------------------------------------------
# 4. Non-contiguous inputs.

def _views(M, B, H, W):
    """(base shape, view function) pairs giving (M, B, H, W) maps of many layouts."""
    return {
        "transposed_hw": ((M, B, W, H), lambda t: t.transpose(2, 3)),
        "reversed": ((W, H, B, M), lambda t: t.permute(3, 2, 1, 0)),
        "col_stride2": ((M, B, H, 2 * W), lambda t: t[..., ::2]),
        "sliced": ((M, B, H + 2, W + 3), lambda t: t[:, :, 1:H + 1, 2:W + 2]),
        "m_stride": ((2 * M, B, H, W), lambda t: t[::2]),
        "b_major": ((B, M, H, W), lambda t: t.transpose(0, 1)),
        "channels_last": ((M, B, H, W), lambda t: t.contiguous(memory_format=torch.channels_last)),
    }


@pytest.mark.parametrize("layout", list(_views(1, 1, 1, 1)))
def test_non_contiguous_maps(layout):
    M, B, H, W = 3, 4, 7, 5
    shape, view = _views(M, B, H, W)[layout]
    base = torch.rand(shape, dtype=torch.float64).float()
    v = view(base)
    assert v.shape == (M, B, H, W)
    assert layout == "channels_last" or not v.is_contiguous()
    z = random_logits(M, B, 6)
    y = labels_half_correct(z[0], 6)
    edges = full_graph(M, tau=split_tau(z[0]))
    out, _ = check_against_reference(base, z, y, edges, 0.45, (3, 4, 11), "sum", view=view)
    same = loss(v.contiguous(), z, y, edges, 0.45, (3, 4, 11), "sum")
    for a, b in zip(out, same):
        assert torch.equal(a.detach(), b.detach())


def test_non_contiguous_logits_labels_and_raw_inputs():
    M, B, H, W = 3, 5, 6, 6
    q = random_maps(M, B, H, W)
    z = random_logits(B, M, 7).transpose(0, 1)  # (M, B, C) view
    y = torch.randint(0, 7, (3 * B,))[::3]
    y[::2] = z[0, ::2].argmax(-1)
    edges = full_graph(M, tau=split_tau(z[0]))
    check_against_reference(q, z, y, edges, 0.5)
    args = raw_args(q, z.contiguous(), y.contiguous(), edges, 0.25)
    maps, logits, labels, ei, ep, prog, crops, red, pn = args
    ei_nc = torch.stack([ei, ei], 2).reshape(-1, 8)[:, ::2]
    ep_nc = ep.t().contiguous().t()
    zc = torch.randn(M, B, 14)[..., ::2]
    zc.copy_(logits)
    a = OP(*args)
    b = OP(maps, zc, y, ei_nc, ep_nc, prog.reshape(1), crops, red, pn)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


# ---------------------------------------------------------------------------
# 5. Extreme values.

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_large_and_negative_maps(dtype):
    M, B, H, W = 3, 6, 8, 7
    q = (torch.randn(M, B, H, W, dtype=torch.float64) * 1e4).to(dtype)
    q[1] = -q[1].abs() - 1  # an all-negative slot
    z = random_logits(M, B, 5, dtype)
    y = labels_half_correct(z[0], 5)
    edges = full_graph(M, tau=split_tau(z[0]))
    ws = weightings(len(edges), M)
    out, g = run_with_grads(ops.attention_crop_loss, q, z, y, edges, 0.5, (3, 5, 7), ws=ws)
    exp, ge = run_with_grads(ref.attention_crop_loss, q.double(), z, y, edges, 0.5, (3, 5, 7),
                             ws=ws)
    assert torch.isfinite(out.edge_loss).all()
    assert_close_outputs(out, exp, **tolerances(dtype))
    for a, b in zip(g, ge):
        assert torch.isfinite(a).all()
        # gradients scale as 1 / ||crop|| ~ 1e-4 / sqrt(d)
        torch.testing.assert_close(a.double(), b, atol=1e-9 if dtype == torch.float32 else 1e-16,
                                   rtol=1e-4 if dtype == torch.float32 else 1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_zero_crops_take_the_normalize_eps_path(dtype):
    """All-zero crops normalise to 0 (x / max(||x||, 1e-12)); the gradient of
    a zero destination crop is dL/dv / eps, as F.normalize's."""
    M, B, H, W = 3, 4, 6, 6
    q = random_maps(M, B, H, W, torch.float64)
    q[1, 0] = 0  # zero destination (and source) map
    q[0, 1] = 0  # zero source map: u = 0, peak (0, 0)
    q[2, 2, :3, :3] = 0  # zero corner of a destination
    q[0, 2] = 0
    q[0, 2, 1, 1] = 1  # source peak at (1, 1): its 3-crop is the zero corner
    q[2, 3, :4, :4] = 1e-14  # below eps (norm 4e-14 < 1e-12): the eps path, not zero
    q[0, 3] = 0
    q[0, 3, 0, 0] = 1
    q = q.to(dtype)
    z = random_logits(M, B, 5, dtype)
    y = torch.randint(0, 5, (B,))
    edges = [EdgeSpec(src=0, dst=1, loss="pull"), EdgeSpec(src=0, dst=2, loss="push"),
             EdgeSpec(src=0, dst=2, loss="pull", weight=0.3),
             EdgeSpec(src=2, dst=1, loss="push"), EdgeSpec(src=1, dst=0, loss="pull")]
    for pull in ("mean", "sum"):
        ws = weightings(len(edges), M)
        out, g = run_with_grads(ops.attention_crop_loss, q, z, y, edges, 0.5, (3, 4), pull=pull,
                                ws=ws)
        exp, ge = run_with_grads(ref.attention_crop_loss, q, z, y, edges, 0.5, (3, 4), pull=pull,
                                 ws=ws)
        assert torch.isfinite(out.edge_loss).all()
        assert_close_outputs(out, exp, **tolerances(dtype))
        rtol = tolerances(dtype)["rtol"]
        for a, b in zip(g, ge):
            assert torch.isfinite(a).all()
            # cells where terms of ~1e11 cancel: an absolute error relative to the largest
            torch.testing.assert_close(a, b, atol=rtol * float(b.abs().max()), rtol=rtol)
        assert g[0][2, 2].abs().max() > 1e9  # really the 1 / eps regime


# ---------------------------------------------------------------------------
# 6. Half precision: error of the op vs a float64 reference, relative to the
# reference's own error on the same low-precision input (flash-attention
# style): the reference computes in float32 and rounds its gradient to the
# input dtype once, so the op may be at most 2x that plus one ulp of the
# largest gradient.

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("M,B,H,W,crops", [(3, 8, 16, 16, (3, 7, 11)), (2, 3, 5, 8, (3, 5, 7)),
                                           (4, 3, 8, 8, (4, 9))])
def test_low_precision(dtype, M, B, H, W, crops):
    ql = random_maps(M, B, H, W, dtype)
    zl = random_logits(M, B, 5, dtype)
    y = labels_half_correct(zl[0].double(), 5)
    edges = full_graph(M, tau=split_tau(zl[0]))
    ws = weightings(len(edges), M)
    args = (zl, y, edges, 0.6, crops, "mean", "mean")
    out, g = run_with_grads(ops.attention_crop_loss, ql, *args, ws=ws)
    exp_l, ge_l = run_with_grads(ref.attention_crop_loss, ql, *args, ws=ws)
    exp64, ge64 = run_with_grads(ref.attention_crop_loss, ql.double(), zl.double(), *args[1:],
                                 ws=ws)
    assert out.edge_loss.dtype == torch.float32 and out.node_loss.dtype == torch.float32
    assert torch.equal(out.count, exp64.count)
    for name in ("edge_loss", "node_loss"):
        a, r, r64 = getattr(out, name).double(), getattr(exp_l, name).double(), getattr(exp64, name)
        err, ref_err = (a - r64).abs(), (r - r64).abs()
        assert (err <= 3 * ref_err + 1e-6 * (1 + r64.abs())).all(), (name, err.max(), ref_err.max())
    eps = torch.finfo(dtype).eps
    for i, (a, r, r64) in enumerate(zip(g, ge_l, ge64)):
        assert a.dtype == dtype and r.dtype == dtype
        err, ref_err = (a.double() - r64).abs(), (r.double() - r64).abs()
        atol = eps * r64.abs().max() + 1e-7
        assert (err <= 2 * ref_err + atol).all(), (i, err.max(), ref_err.max(), atol)


def test_low_precision_raw_output_dtypes_and_mixed_logits():
    q = random_maps(2, 3, 6, 6, torch.bfloat16)
    z = random_logits(2, 3, 4, torch.float32)  # logits need not share the maps' dtype
    y = z[0].argmax(-1)
    edges = [EdgeSpec(src=0, dst=1, loss="pull", gate="correct"),
             EdgeSpec(src=1, dst=0, loss="push", gate="threshold")]
    el, nl, cnt, grad = OP(*raw_args(q, z, y, edges))
    assert el.dtype == nl.dtype == torch.float32 and cnt.dtype == torch.long
    assert grad.dtype == torch.bfloat16 and grad.shape == q.shape
    assert int(cnt[0]) == 3
    assert OP_BWD(torch.ones(2), *raw_args(q, z, y, edges)).dtype == torch.bfloat16
    check_against_reference(q.double(), z.double(), y, edges)
    q16 = random_maps(2, 3, 6, 6, torch.float16)
    out = loss(q16, z.double(), y, edges)
    exp = ref.attention_crop_loss(q16, z.double(), y, edges)
    assert torch.equal(out.count, exp.count)
    torch.testing.assert_close(out.edge_loss, exp.edge_loss, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------
# 7. gradcheck (only destination slots vary), opcheck, fake kernels, compile.

@pytest.mark.parametrize("pull", ["mean", "sum"])
def test_gradcheck_float64(pull):
    B, H, W = 3, 6, 5
    src = torch.rand(2, B, H, W, dtype=torch.float64)
    dst = torch.rand(2, B, H, W, dtype=torch.float64).requires_grad_(True)
    z = random_logits(4, B, 4, torch.float64)
    y = labels_half_correct(z[1], 4)
    tau = split_tau(z[1])
    edges = [
        EdgeSpec(src=0, dst=2, loss="pull"),
        EdgeSpec(src=1, dst=3, loss="push", gate="correct"),
        EdgeSpec(src=0, dst=3, loss="pull", gate="threshold", tau=tau, weight=0.7),
        EdgeSpec(src=1, dst=2, loss="push", gate="sine", f=0.3, phi=0.2),
        EdgeSpec(src=1, dst=3, loss="pull", gate="linear"),
    ]

    def f(d):
        out = ops.attention_crop_loss(torch.cat([src, d]), z, y, edges, 0.3, (3, 4, 9), "sum", pull)
        return out.edge_loss, out.node_loss

    assert torch.autograd.gradcheck(f, (dst,), eps=1e-6, atol=1e-7, rtol=1e-5)
    w = torch.randn(len(edges), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda d: (f(d)[0] * w).sum(), (dst,), eps=1e-6, atol=1e-7)


def _opcheck_case(dtype, noncontig=False, requires_grad=True):
    M, B, H, W = 3, 4, 6, 5
    q = random_maps(M, B, H, W, dtype)
    if noncontig:
        q = q.transpose(2, 3).contiguous().transpose(2, 3)
    z = random_logits(M, B, 4, dtype)
    y = labels_half_correct(z[0].double(), 4)
    edges = full_graph(M, tau=split_tau(z[0]))
    return raw_args(q.requires_grad_(requires_grad), z, y, edges, 0.4, (3, 7)), len(edges)


@pytest.mark.parametrize(
    "dtype,noncontig",
    [(torch.float32, False), (torch.float64, False), (torch.bfloat16, False), (torch.float32, True)],
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
    args, E = _opcheck_case(torch.float16, noncontig=True, requires_grad=False)
    assert_fake_kernels_match(OP, OP_BWD, args, E)


@pytest.mark.slow  # torch.compile: seconds of Dynamo/Inductor per case
@pytest.mark.parametrize("prebuilt_table", [True, False], ids=["table", "specs"])
def test_torch_compile_fullgraph(prebuilt_table):
    torch._dynamo.reset()
    M, B, H, W = 3, 5, 8, 8
    q, z = case(M, B, H, W)
    y = labels_half_correct(z[0], 6)
    specs = full_graph(M)
    edges = AttentionEdgeTable(specs, M) if prebuilt_table else specs
    w = torch.randn(len(specs))

    def f(x, logits, labels, progress):
        out = ops.attention_crop_loss(x, logits, labels, edges, progress, (3, 7, 11))
        total = out.node_loss.sum() + (out.edge_loss * w).sum()
        return total, out.edge_loss, out.node_loss, out.count

    prog = torch.tensor(0.35, dtype=torch.float64)
    xe = q.clone().requires_grad_(True)
    xc = q.clone().requires_grad_(True)
    eager = f(xe, z, y, prog)
    comp = torch.compile(f, fullgraph=True)(xc, z, y, prog)
    eager[0].backward()
    comp[0].backward()
    for a, b in zip(eager, comp):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(xc.grad, xe.grad, atol=1e-6, rtol=1e-6)
    xe.grad = xc.grad = None  # node_loss.sum() alone (the saved-gradient path)
    g = torch.compile(lambda x: ops.attention_crop_loss(x, z, y, edges, prog).node_loss.sum(),
                      fullgraph=True)
    g(xc).backward()
    ops.attention_crop_loss(xe, z, y, edges, prog).node_loss.sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------
# 8. Gates, progress, cutoff.

def test_correct_and_threshold_gates_read_the_source_logits():
    B = 8
    q, z = case(3, B, 6, 6, C=5, dtype=torch.float64)
    y = z[0].argmax(-1).clone()
    y[[1, 4, 5]] = (y[[1, 4, 5]] + 1) % 5  # source 0 is wrong on these three
    passing = torch.ones(B, dtype=torch.bool)
    passing[[1, 4, 5]] = False
    z[1] = z[0].flip(0)  # the destination's logits differ: must not be read
    for reduction, div in (("mean", B), ("sum", 1)):
        out, g = grad_of(q, z, y, [EdgeSpec(src=0, dst=1, loss="pull", gate="correct")], reduction=reduction)
        assert int(out.count[0]) == 5
        per = torch.stack([ref.attention_crop_terms(q[0, n], q[1, n], (3, 5, 7), "pull")
                           for n in range(B)])
        torch.testing.assert_close(out.edge_loss[0], per[passing].sum() / div)
        assert torch.equal(g[1, ~passing], torch.zeros_like(g[1, ~passing]))
        assert (g[1, passing].abs().flatten(1).sum(-1) > 0).all()
    tau = split_tau(z[0])
    out = loss(q, z, y, [EdgeSpec(src=0, dst=1, loss="push", gate="threshold", tau=tau)])
    assert int(out.count[0]) == int((maxprob(z[0]) > tau).sum()) == B // 2


@pytest.mark.parametrize("p", [0.0, 0.3, 0.25, 1.0])
def test_progress_tensor_equals_float(p):
    q, z = case(3, 5, 6, 6)
    y = labels_half_correct(z[0], 6)
    edges = full_graph(3)
    a = loss(q, z, y, edges, p)
    for pt in (torch.tensor(p, dtype=torch.float64), torch.tensor([p], dtype=torch.float64)):
        b = loss(q, z, y, edges, pt)
        for u, v in zip(a, b):
            assert torch.equal(u, v)
    with pytest.raises(ValueError, match="progress must be a scalar"):
        loss(q, z, y, edges, torch.tensor([0.1, 0.2]))


def test_gate_weights_scale_the_through_loss():
    q, z = case(2, 6, 7, 7, dtype=torch.float64)
    y = torch.randint(0, 6, (6,))
    for kind in LOSSES:
        thr, g_thr = grad_of(q, z, y, [EdgeSpec(src=0, dst=1, loss=kind)])
        for gate, p, w in (("linear", 0.3, 0.3), ("neg_linear", 0.3, 0.7), ("linear", 0.0, 0.0),
                           ("sine", 0.35, 0.5 + 0.5 * math.sin(2 * math.pi * 0.8 * 0.35 + 1.1))):
            out, g = grad_of(q, z, y, [EdgeSpec(src=0, dst=1, loss=kind, gate=gate, f=0.8, phi=1.1)], p)
            torch.testing.assert_close(out.edge_loss, w * thr.edge_loss, atol=1e-15, rtol=1e-13)
            torch.testing.assert_close(g, w * g_thr, atol=1e-15, rtol=1e-13)
            assert int(out.count[0]) == (6 if w > 0 else 0)


def test_cutoff_edge_contributes_nothing():
    B = 5
    q, z = case(3, B, 6, 6)
    y = torch.randint(0, 6, (B,))
    live = [EdgeSpec(src=1, dst=0, loss="pull"), EdgeSpec(src=0, dst=1, loss="push")]
    cut = EdgeSpec(src=0, dst=2, loss="pull", gate="cutoff")

    def f(o):
        return o.node_loss.sum() + o.edge_loss.sum()

    with_cut, g_with = grad_of(q, z, y, live + [cut], f=f)
    without, g_without = grad_of(q, z, y, live, f=f)
    assert with_cut.edge_loss[2] == 0 and with_cut.count[2] == 0
    assert torch.equal(with_cut.edge_loss[:2], without.edge_loss)
    assert torch.equal(g_with, g_without)
    q_bad = q.clone()
    q_bad[2] = math.nan  # nothing is computed for it: its NaN destination does not leak
    bad, g_bad = grad_of(q_bad, z, y, live + [cut], f=f)
    assert torch.equal(bad.edge_loss, with_cut.edge_loss)
    assert torch.equal(g_bad, g_with)


# ---------------------------------------------------------------------------
# 9. Bad inputs.

def test_bad_arguments_through_the_wrapper():
    q, z = case(3, 4, 6, 6)
    y = torch.zeros(4, dtype=torch.long)
    edges = [EdgeSpec(src=0, dst=1, loss="pull")]
    for bad in ((), [], (3, 0), (-1,), (2.5,), (True,), "3", 3, tuple(range(1, 18))):
        with pytest.raises(ValueError, match="crop"):
            loss(q, z, y, edges, crop_sizes=bad)
    with pytest.raises(ValueError, match=r"crop size 0 is not allowed; crop sizes must be positive"):
        loss(q, z, y, edges, crop_sizes=(3, 0))
    with pytest.raises(ValueError, match="unknown pull normalisation 'avg'; allowed: mean, sum"):
        loss(q, z, y, edges, pull="avg")
    with pytest.raises(ValueError, match="unknown reduction 'avg'; allowed: mean, sum"):
        loss(q, z, y, edges, reduction="avg")
    with pytest.raises(ValueError, match=r"maps must be \(M, B, H, W\), got shape \(3, 4, 6\)"):
        loss(q[..., 0], z, y, edges)
    with pytest.raises(ValueError, match=r"logits must be \(M, B, C\) with \(M, B\) = \(3, 4\)"):
        loss(q, z[:2], y, edges)
    with pytest.raises(ValueError, match=r"logits must be \(M, B, C\)"):
        loss(q, z[..., 0], y, edges)
    with pytest.raises(ValueError, match=r"unknown edges\[0\]\.loss 'kl'; allowed: pull, push"):
        loss(q, z, y, [EdgeSpec(src=0, dst=1, loss="kl")])
    with pytest.raises(ValueError, match="an attention edge needs a source node, not the label"):
        loss(q, z, y, [EdgeSpec(src="label", dst=1, loss="pull")])
    with pytest.raises(ValueError, match=r"dst = 5 .*0\.\.2"):
        loss(q, z, y, [EdgeSpec(src=0, dst=5, loss="push")])
    with pytest.raises(ValueError, match="built for 2 nodes but logits have 3"):
        loss(q, z, y, AttentionEdgeTable([EdgeSpec(src=0, dst=1, loss="pull")], 2))
    with pytest.raises(TypeError, match="expected a AttentionEdgeTable, got a EdgeTable"):
        loss(q, z, y, EdgeTable([EdgeSpec(src=0, dst=1, loss="kl")], 3))


def test_bad_shapes_and_dtypes_raw():
    q, z = case(2, 4, 5, 5)
    y = torch.zeros(4, dtype=torch.long)
    args = list(raw_args(q, z, y, [EdgeSpec(src=0, dst=1, loss="pull")]))

    def call(**kw):
        a = list(args)
        names = ["maps", "logits", "labels", "edge_index", "edge_params", "progress",
                 "crop_sizes", "reduction", "pull_norm"]
        for k, v in kw.items():
            a[names.index(k)] = v
        return OP(*a)

    cases = [
        (dict(maps=q[..., 0]), r"maps must be \(M, B, H, W\).*\[2, 4, 5\]"),
        (dict(maps=q.long()), "maps dtype must be float32, float64, float16 or bfloat16, got Long"),
        (dict(maps=q[:, :, :0]), r"at least one cell \(H, W >= 1\)"),
        (dict(logits=z[:1]), r"logits must be \(M, B, C\) with \(M, B\) = \(2, 4\).*\[1, 4, 6\]"),
        (dict(logits=z[..., :0]), r"and C >= 1"),
        (dict(logits=z.long()), "logits dtype must be float32"),
        (dict(labels=y[:3]), r"labels must be \(B,\) with B = maps.size\(1\) = 4, got shape \[3\]"),
        (dict(labels=y.int()), "labels must be int64, got Int"),
        (dict(edge_index=args[3].long()), r"edge_index must be int32 \(E, 4\).*Long"),
        (dict(edge_params=args[4].float()), r"edge_params must be float64 \(E, 4\).*Float"),
        (dict(progress=args[5].float()), "progress must be a one-element float64 tensor.*Float"),
        (dict(crop_sizes=[]), "crop_sizes must hold 1 to 16 sizes, got 0"),
        (dict(crop_sizes=[3, 0]), r"crop size 0 is not allowed; crop sizes must be positive, got \[3, 0\]"),
        (dict(crop_sizes=[3] * 17), "crop_sizes must hold 1 to 16 sizes, got 17"),
        (dict(reduction=2), r"reduction must be 0 \(mean\) or 1 \(sum\), got 2"),
        (dict(pull_norm=-1), r"pull_norm must be 0 \(mean\) or 1 \(sum\), got -1"),
    ]
    for kw, pattern in cases:
        with pytest.raises(RuntimeError, match=pattern):
            call(**kw)
    with pytest.raises(RuntimeError, match=r"grad_edge must be \(E,\) with E = 1, got \[2\]"):
        OP_BWD(torch.ones(2), *args)


@pytest.mark.parametrize("edge_index,pattern", [
    ([[3, 1, 0, 0]], r"edge 0 has source 3; allowed: a node in \[0, 3\) \(an attention edge never"),
    ([[0, 1, 0, 0], [-1, 1, 0, 0]], r"edge 1 has source -1"),
    ([[0, 3, 0, 0]], r"edge 0 has destination 3; allowed: a node in \[0, 3\)"),
    ([[0, 1, 2, 0]], r"edge 0 has loss kind 2; allowed: 0 pull, 1 push"),
    ([[0, 1, 0, 7]], r"edge 0 has gate kind 7; allowed: 0 through, 1 cutoff"),
])
def test_raw_op_bad_edge_table(edge_index, pattern):
    q, z = case(3, 4, 5, 5)
    y = torch.zeros(4, dtype=torch.long)
    ei = torch.tensor(edge_index, dtype=torch.int32)
    ep = torch.ones(ei.shape[0], 4, dtype=torch.float64)
    prog = torch.tensor(0.5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=pattern):
        OP(q, z, y, ei, ep, prog, [3], 0, 0)
    with pytest.raises(RuntimeError, match=pattern):
        OP_BWD(torch.ones(ei.shape[0]), q, z, y, ei, ep, prog, [3], 0, 0)


def test_labels_out_of_range():
    q, z = case(2, 4, 5, 5, C=5)
    for bad in (5, -1):
        y = torch.tensor([0, 1, bad, 2])
        with pytest.raises(RuntimeError, match=f"label {bad} of sample 2 is out of range; "
                                               r"allowed: \[0, 5\)"):
            loss(q, z, y, [EdgeSpec(src=0, dst=1, loss="pull", gate="correct")])
    # labels that no correct gate reads are not checked (unlabelled batches)
    y = torch.tensor([0, 1, 99, 2])
    out = loss(q, z, y, [EdgeSpec(src=0, dst=1, loss="pull"),
                         EdgeSpec(src=1, dst=0, loss="push", gate="threshold")])
    assert torch.isfinite(out.edge_loss).all()


# ---------------------------------------------------------------------------
# 10. Determinism.

def test_deterministic_and_thread_count_independent():
    M, B, H, W = 4, 64, 16, 16
    q, z = case(M, B, H, W)
    y = labels_half_correct(z[0], 6)
    edges = full_graph(M, tau=split_tau(z[0]))
    ws = weightings(len(edges), M)

    def run():
        out, g = run_with_grads(ops.attention_crop_loss, q, z, y, edges, 0.7, (3, 7, 11), ws=ws)
        return [t.detach() for t in out] + g

    first, second = run(), run()
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    results = run_at_thread_counts(run, (1, 2))
    for a, b, c in zip(results[1], results[2], first):
        assert torch.equal(a, b) and torch.equal(a, c)


# ---------------------------------------------------------------------------
# 11. CUDA against CPU.

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCUDA:
    @pytest.fixture(autouse=True)
    def _need_cuda_build(self):
        if not cuda_built():
            pytest.skip("ktgfast._C was built without CUDA kernels")

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16,
                                       torch.bfloat16])
    @pytest.mark.parametrize("M,B,H,W,crops", [(2, 1, 1, 1, (3,)), (4, 33, 16, 16, (3, 7, 11)),
                                               (3, 5, 7, 9, (4, 20)), (2, 130, 64, 48, (3, 33))])
    def test_cuda_matches_cpu(self, dtype, M, B, H, W, crops):
        q, z = case(M, B, H, W, C=7, dtype=dtype)
        y = labels_half_correct(z[0].double(), 7)
        edges = full_graph(M, tau=split_tau(z[0]))
        ws = weightings(len(edges), M)
        out_c, g_c = run_with_grads(ops.attention_crop_loss, q, z, y, edges, 0.6, crops, ws=ws)
        table = AttentionEdgeTable(edges, M, "cuda")
        prog = torch.tensor(0.6, dtype=torch.float64, device="cuda")
        out_g, g_g = run_with_grads(ops.attention_crop_loss, q.cuda(), z.cuda(), y.cuda(), table,
                                    prog, crops, ws=ws)
        tol = tolerances(dtype)
        assert torch.equal(out_g.count.cpu(), out_c.count)
        torch.testing.assert_close(out_g.edge_loss.cpu(), out_c.edge_loss, **tol)
        torch.testing.assert_close(out_g.node_loss.cpu(), out_c.node_loss, **tol)
        for a, b in zip(g_g, g_c):
            assert a.dtype == dtype and a.device.type == "cuda"
            if dtype in (torch.float16, torch.bfloat16):  # one rounding apart at most
                eps = torch.finfo(dtype).eps
                torch.testing.assert_close(a.cpu().double(), b.double(),
                                           atol=eps * float(b.abs().max()) + 1e-7, rtol=eps)
            else:
                torch.testing.assert_close(a.cpu(), b, **tol)

    def test_cuda_ties_non_contiguous_and_deterministic(self):
        M, B, H, W = 3, 16, 9, 7
        base = torch.rand(W, H, B, M, device="cuda")
        q = base.permute(3, 2, 1, 0)
        q[0, :4] = 1.0  # constant maps: peak (0, 0)
        z = torch.randn(M, B, 5, device="cuda")
        y = torch.randint(0, 5, (B,), device="cuda")
        edges = full_graph(M)
        a = ops.attention_crop_loss(q, z, y, edges, 0.3)
        b = ops.attention_crop_loss(q, z, y, edges, 0.3)
        for u, v in zip(a, b):
            assert torch.equal(u, v)
        c = ops.attention_crop_loss(q.cpu(), z.cpu(), y.cpu(), edges, 0.3)
        assert torch.equal(a.count.cpu(), c.count)
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
        q = torch.rand(2, 3, 4, 4, device="cuda")
        z = torch.randn(2, 3, 5, device="cuda")
        args = raw_args(q, z, torch.zeros(3, dtype=torch.long, device="cuda"),
                        [EdgeSpec(src=0, dst=1, loss="pull")])
        with pytest.raises(RuntimeError, match="all tensors must be on cuda"):
            OP(q, z, torch.zeros(3, dtype=torch.long), *args[3:])
