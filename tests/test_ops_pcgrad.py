"""Tests of the PCGrad op (ktgfast.ops.pcgrad, the raw torch.ops.ktgfast.pcgrad
and its fake kernel) against the literal transcription of Yu et al. 2020
Alg. 1 (ktgfast.reference.pcgrad) and hand-computed cases; and of its input and
output helpers (ktgfast.train.gradients)."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import ktgfast.ops as ops
import ktgfast.reference as ref
from ktgfast.train import gradients

ops._require_extension()  # a missing build fails loudly here, never skips

RAW = torch.ops.ktgfast.pcgrad.default
SUM, MEAN = 0, 1


# ---------------------------------------------------------------------------
# Helpers.

def conflicting_grads(k: int, p: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """(K, P) gradients with a shared component and task-specific noise: many
    pairs conflict, many do not (pure noise in high dimension is ~orthogonal)."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(p, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(k, 1, generator=g) < 0.5, -1.0, 1.0).double()
    scale = torch.rand(k, 1, generator=g, dtype=torch.float64) + 0.1
    noise = torch.randn(k, p, generator=g, dtype=torch.float64)
    return (scale * (sign * common + 0.8 * noise)).to(dtype)


def assert_update_close(got, want, dtype, scale: float) -> None:
    """``got`` (op, ``dtype``) against ``want`` (float64): absolute error
    relative to the size of the gradients."""
    tol = {torch.float64: 1e-11, torch.float32: 2e-5}[dtype] * max(scale, 1e-30)
    torch.testing.assert_close(got.double(), want.double(), rtol=0, atol=tol)


def split_like(flat: torch.Tensor, shapes) -> list[torch.Tensor]:
    """(K, P) -> one (K, *shape) tensor per shape."""
    out, start = [], 0
    for s in shapes:
        n = int(torch.Size(s).numel())
        out.append(flat[:, start:start + n].reshape(flat.shape[0], *s))
        start += n
    return out


SHAPES = [(3, 5), (7,), (), (2, 3, 4), (1,), (1, 1, 9)]


# ---------------------------------------------------------------------------
# The op against the reference.

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("p", [1, 3, 1000, 2**17 + 3])
@pytest.mark.parametrize("k", range(1, 8))
def test_fixed_order_matches_reference(k, p, dtype):
    g = conflicting_grads(k, p, dtype, seed=10 * k + p % 7)
    order = ops.pcgrad_order(k, "fixed")
    got = ops.pcgrad(g, order="fixed")
    want = ref.pcgrad(g.double(), order)  # the literal algorithm, in float64
    same_dtype = ref.pcgrad(g, order)     # ... and in the input's dtype
    scale = float(g.abs().max()) * k
    assert got.update.shape == (p,) and got.update.dtype == dtype
    assert_update_close(got.update, want.update, dtype, scale)
    assert_update_close(got.update, same_dtype.update, torch.float32, scale)
    assert torch.equal(got.conflicts, want.conflicts)
    assert got.conflicts.dtype == torch.long


@pytest.mark.parametrize("k", [2, 4, 7])
def test_random_order_with_seed_matches_reference(k):
    g = conflicting_grads(k, 777, seed=k)
    got = ops.pcgrad(g, order="random", generator=42)
    want = ref.pcgrad(g, ops.pcgrad_order(k, "random", 42))
    assert_update_close(got.update, want.update, torch.float64, float(g.abs().max()) * k)
    # A generator object draws the same order as its seed.
    got_gen = ops.pcgrad(g, order="random", generator=torch.Generator().manual_seed(42))
    assert torch.equal(got_gen.update, got.update)


def test_order_changes_the_result():
    """Random orders differ between seeds, and so do the updates (K = 5, many conflicts)."""
    g = conflicting_grads(5, 300, seed=3)
    a, b = ops.pcgrad_order(5, "random", 1), ops.pcgrad_order(5, "random", 2)
    assert not torch.equal(a, b)
    ua, ub = ops.pcgrad(g, a).update, ops.pcgrad(g, b).update
    assert not torch.allclose(ua, ub)
    assert_update_close(ub, ref.pcgrad(g, b).update, torch.float64, float(g.abs().max()) * 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_list_of_odd_shapes_matches_reference(k, dtype):
    total = sum(int(torch.Size(s).numel()) for s in SHAPES)
    flat = conflicting_grads(k, total, dtype, seed=k)
    parts = split_like(flat, SHAPES)
    order = ops.pcgrad_order(k, "random", 7)
    got = ops.pcgrad(parts, order)
    want = ref.pcgrad([t.double() for t in parts], order)
    assert isinstance(got.update, list) and len(got.update) == len(SHAPES)
    scale = float(flat.abs().max()) * k
    for u, w, s in zip(got.update, want.update, SHAPES):
        assert u.shape == s and u.dtype == dtype and u.is_contiguous()
        assert_update_close(u, w, dtype, scale)
    assert torch.equal(got.conflicts, want.conflicts)
    # The list is one problem: the same as the concatenated (K, P) tensor.
    whole = ops.pcgrad(flat, order).update
    assert_update_close(torch.cat([u.reshape(-1) for u in got.update]), whole, dtype, scale)


def noncontiguous_cases(k: int):
    """(name, tensor (K, *shape)) with layouts the op must read correctly."""
    g = torch.Generator().manual_seed(k)
    yield "transposed_inner", torch.randn(k, 6, 5, generator=g, dtype=torch.float64).transpose(1, 2)
    yield "strided_columns", torch.randn(k, 2001, generator=g, dtype=torch.float64)[:, ::2]
    yield "task_minor", torch.randn(1003, k, generator=g, dtype=torch.float64).T
    yield "row_slice", torch.randn(k, 5000, generator=g, dtype=torch.float64)[:, 17:4017]
    yield "expanded_rows", torch.randn(1, 333, generator=g, dtype=torch.float64).expand(k, 333)


@pytest.mark.parametrize("k", [2, 5])
def test_noncontiguous_inputs(k):
    cases = dict(noncontiguous_cases(k))
    order = ops.pcgrad_order(k, "random", 5)
    for name, t in cases.items():
        got = ops.pcgrad([t], order)
        want = ref.pcgrad([t.contiguous()], order)
        assert_update_close(got.update[0], want.update[0], torch.float64, float(t.abs().max()) * k)
        assert torch.equal(got.conflicts, want.conflicts), name
    # All of them at once, as one list, against their contiguous copies.
    got = ops.pcgrad(list(cases.values()), order)
    want = ops.pcgrad([t.contiguous() for t in cases.values()], order)
    for u, w in zip(got.update, want.update):
        torch.testing.assert_close(u, w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_low_precision(dtype):
    """fp16 / bf16: accumulation in float64 / float32, so the op's error against
    the float64 reference is at most about one rounding of the output, never
    worse than the reference's own error at that precision."""
    k = 4
    g = conflicting_grads(k, 5000, torch.float64, seed=9).to(dtype)
    order = ops.pcgrad_order(k, "fixed")
    got = ops.pcgrad(g, order)
    exact = ref.pcgrad(g.double(), order).update
    lowp = ref.pcgrad(g, order).update
    assert got.update.dtype == dtype
    op_err = (got.update.double() - exact).abs().max()
    ref_err = (lowp.double() - exact).abs().max()
    rounding = torch.finfo(dtype).eps * exact.abs().max()
    assert op_err <= max(float(ref_err), float(rounding)) + 1e-12
    assert torch.equal(got.conflicts, ref.pcgrad(g.double(), order).conflicts)


# ---------------------------------------------------------------------------
# Hand-made cases and edge cases.

def test_orthogonal_gradients_do_not_conflict():
    g = torch.eye(4, 6, dtype=torch.float64) * torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    r = ops.pcgrad(g, "random", generator=0)
    assert r.conflicts.sum() == 0
    torch.testing.assert_close(r.update, g.sum(0), rtol=0, atol=0)


def test_opposite_gradients_cancel():
    g1 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    r = ops.pcgrad(torch.stack([g1, -g1]), "fixed")
    assert r.conflicts.tolist() == [[0, 1], [1, 0]]
    torch.testing.assert_close(r.update, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-15)


# g1 = (1, 0), g2 = (-1, 1), g3 = (0, -1): g1.g2 = -1, g1.g3 = 0, g2.g3 = -1.
HAND = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
HAND_CONFLICTS = [[0, 1, 0], [1, 0, 1], [0, 1, 0]]


@pytest.mark.parametrize(
    "order,update",
    [
        # fixed: g1' = (1,0) + (-1,1)/2 = (.5,.5), then -.5 against g3 -> (.5, 0);
        # g2' = (-1,1) + (1,0) = (0,1), then -1 against g3 -> (0,0);
        # g3' : 0 against g1 (no change), -1 against g2 -> (0,-1) + (-1,1)/2 = (-.5,-.5).
        ([[1, 2], [0, 2], [0, 1]], [0.0, -0.5]),
        # reversed: g1' = (.5,.5) (g3 first: dot 0); g2' = (-1,0) then (0,0);
        # g3' = (-.5,-.5) then -.5 against g1 -> (0,-.5).
        ([[2, 1], [2, 0], [1, 0]], [0.5, 0.0]),
    ],
    ids=["fixed", "reversed"],
)
def test_hand_computed_three_tasks(order, update):
    order = torch.tensor(order)
    r = ops.pcgrad(HAND, order)
    assert r.conflicts.tolist() == HAND_CONFLICTS
    torch.testing.assert_close(r.update, torch.tensor(update, dtype=torch.float64), rtol=0, atol=1e-15)
    m = ops.pcgrad(HAND, order, reduction="mean")
    torch.testing.assert_close(m.update, torch.tensor(update, dtype=torch.float64) / 3, rtol=0, atol=1e-15)
    torch.testing.assert_close(ref.pcgrad(HAND, order).update, r.update, rtol=0, atol=1e-15)


def test_zero_gradients():
    """A zero gradient is never projected against (0 . g is not < 0) and
    conflicts with nobody; all-zero gradients give a zero update."""
    g = torch.tensor([[1.0, 2.0], [0.0, 0.0], [-1.0, 0.25]], dtype=torch.float64)
    r = ops.pcgrad(g, "fixed")
    assert r.conflicts.tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert torch.isfinite(r.update).all()
    torch.testing.assert_close(r.update, ref.pcgrad(g, ops.pcgrad_order(3, "fixed")).update)
    z = ops.pcgrad(torch.zeros(3, 10), "random", generator=1)
    assert torch.equal(z.update, torch.zeros(10)) and z.conflicts.sum() == 0


def test_single_task_is_identity():
    g = torch.randn(1, 37)
    for reduction in ("sum", "mean"):
        r = ops.pcgrad(g, "random", reduction=reduction)
        assert torch.equal(r.update, g[0])
        assert r.conflicts.tolist() == [[0]]


def test_mean_is_sum_over_k():
    g = conflicting_grads(5, 400, seed=4)
    order = ops.pcgrad_order(5, "random", 3)
    s = ops.pcgrad(g, order, reduction="sum")
    m = ops.pcgrad(g, order, reduction="mean")
    torch.testing.assert_close(m.update, s.update / 5, rtol=1e-14, atol=1e-14)
    assert torch.equal(m.conflicts, s.conflicts)
    want = ref.pcgrad(g, order, reduction="mean")
    assert_update_close(m.update, want.update, torch.float64, float(g.abs().max()))
    parts = split_like(g, [(20, 10), (200,)])
    for u, w in zip(ops.pcgrad(parts, order, reduction="mean").update,
                    ref.pcgrad(parts, order, reduction="mean").update):
        assert_update_close(u, w, torch.float64, float(g.abs().max()))


def test_empty_parameters():
    """Tensors with no elements give empty updates; the others are unaffected."""
    g = torch.randn(3, 5, dtype=torch.float64)
    r = ops.pcgrad([torch.zeros(3, 0, 4, dtype=torch.float64), g], "fixed")
    assert r.update[0].shape == (0, 4)
    torch.testing.assert_close(r.update[1], ops.pcgrad(g, "fixed").update, rtol=0, atol=0)


def test_two_tasks_geometry():
    """The paper's geometry for K = 2 conflicting gradients: each projected
    g_i' is orthogonal to the other g_j, so update . g_i = ||g_i'||^2 >= 0 with
    g_i' = g_i - (g_i.g_j)/||g_j||^2 g_j (the update never increases either loss
    to first order)."""
    for seed in range(20):
        g = conflicting_grads(2, 50, seed=seed)
        if float(g[0] @ g[1]) >= 0:
            continue
        u = ops.pcgrad(g, "fixed").update
        g1p = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
        g2p = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]
        torch.testing.assert_close(u @ g[0], g1p @ g1p, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(u @ g[1], g2p @ g2p, rtol=1e-10, atol=1e-10)
        assert float(u @ g[0]) >= -1e-10 and float(u @ g[1]) >= -1e-10


def projected(g: torch.Tensor, order: torch.Tensor, i: int) -> torch.Tensor:
    """Task i's projected gradient g_i', read off the op's sum: scaling g_i by
    2 doubles g_i' (projection is positively homogeneous) and leaves every other
    g_k' unchanged (they project onto the direction of the original g_i)."""
    scaled = g.clone()
    scaled[i] *= 2
    return ops.pcgrad(scaled, order).update - ops.pcgrad(g, order).update


@pytest.mark.parametrize("k", [3, 5, 7])
def test_last_projection_leaves_no_conflict(k):
    """After task i's last projection (against j = order[i][-1]),
    g_i' . g_j >= -eps; every g_i' is also no longer than g_i."""
    g = conflicting_grads(k, 200, seed=11 + k)
    order = ops.pcgrad_order(k, "random", 8)
    total = torch.zeros(200, dtype=torch.float64)
    for i in range(k):
        gi = projected(g, order, i)
        j = int(order[i, -1])
        assert float(gi @ g[j]) >= -1e-10 * float(g[i].norm() * g[j].norm())
        assert float(gi.norm()) <= float(g[i].norm()) * (1 + 1e-12)
        total += gi
    torch.testing.assert_close(total, ops.pcgrad(g, order).update, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------
# Errors.

def test_order_validation():
    g = torch.randn(3, 4)
    bad = {
        "shape": torch.tensor([[1, 2], [0, 2]]),
        "dtype": torch.tensor([[1, 2], [0, 2], [0, 1]], dtype=torch.int32),
        "self": torch.tensor([[0, 2], [0, 2], [0, 1]]),
        "duplicate": torch.tensor([[1, 1], [0, 2], [0, 1]]),
        "range": torch.tensor([[1, 2], [0, 3], [0, 1]]),
    }
    for name, order in bad.items():
        with pytest.raises(ValueError, match="order"):
            ops.pcgrad(g, order)
    with pytest.raises(ValueError, match="unknown pcgrad order 'shuffled'"):
        ops.pcgrad(g, "shuffled")
    with pytest.raises(TypeError, match="order"):
        ops.pcgrad(g, [[1, 2], [0, 2], [0, 1]])
    # The raw CPU op checks the values too.
    with pytest.raises(RuntimeError, match="order row 1 must be a permutation"):
        RAW([g], bad["range"], SUM)
    with pytest.raises(RuntimeError, match=r"order must be int64 \(K, K-1\)"):
        RAW([g], bad["dtype"], SUM)


def test_input_validation():
    with pytest.raises(ValueError, match=r"must be \(K, P\)"):
        ops.pcgrad(torch.randn(5), "fixed")
    with pytest.raises(ValueError, match="empty list"):
        ops.pcgrad([], "fixed")
    with pytest.raises(ValueError, match="same K"):
        ops.pcgrad([torch.randn(3, 2), torch.randn(2, 2)], "fixed")
    with pytest.raises(ValueError, match="one dtype"):
        ops.pcgrad([torch.randn(3, 2), torch.randn(3, 2, dtype=torch.float64)], "fixed")
    with pytest.raises(ValueError, match="0-dim"):
        ops.pcgrad([torch.randn(3, 2), torch.tensor(1.0)], "fixed")
    with pytest.raises(ValueError, match="unknown pcgrad reduction 'avg'"):
        ops.pcgrad(torch.randn(3, 2), "fixed", reduction="avg")
    with pytest.raises(RuntimeError, match="dtype must be float32, float64, float16 or bfloat16"):
        RAW([torch.ones(2, 3, dtype=torch.int64)], torch.tensor([[1], [0]]), SUM)
    with pytest.raises(RuntimeError, match="reduction must be 0 .sum. or 1 .mean."):
        RAW([torch.randn(2, 3)], torch.tensor([[1], [0]]), 2)
    with pytest.raises(RuntimeError, match="at least one tensor"):
        RAW([], torch.zeros(0, 0, dtype=torch.long), SUM)


def test_not_differentiable():
    """Inputs that require grad are detached: the update is a plain tensor."""
    g = torch.randn(3, 8, requires_grad=True)
    r = ops.pcgrad(g * 2, "fixed")
    assert not r.update.requires_grad


# ---------------------------------------------------------------------------
# Determinism and the op's registration.

def test_deterministic_across_thread_counts():
    """Fixed chunks, partials reduced in chunk order: bitwise equal for any
    number of threads (2**17 + 3 elements = many chunks)."""
    parts = split_like(conflicting_grads(5, 2**17 + 3 + 90, torch.float32, seed=2), [(2**17 + 3,), (9, 10)])
    order = ops.pcgrad_order(5, "random", 1)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(ops.pcgrad(parts, order))
    finally:
        torch.set_num_threads(before)
    for r in results[1:]:
        for u, v in zip(r.update, results[0].update):
            assert torch.equal(u, v)
        assert torch.equal(r.conflicts, results[0].conflicts)


def test_opcheck():
    parts = split_like(conflicting_grads(3, 60 + 7, torch.float32, seed=5), [(6, 10), (7,)])
    order = ops.pcgrad_order(3, "random", 2)
    for reduction in (SUM, MEAN):
        torch.library.opcheck(RAW, (parts, order, reduction))
    torch.library.opcheck(RAW, ([torch.randn(1, 4, dtype=torch.float64)], torch.zeros(1, 0, dtype=torch.long), SUM))


def test_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        parts = [torch.empty(4, 3, 5, dtype=torch.bfloat16), torch.empty(4, 2, dtype=torch.bfloat16)]
        updates, conflicts = RAW(parts, torch.empty(4, 3, dtype=torch.long), SUM)
        assert [u.shape for u in updates] == [(3, 5), (2,)]
        assert all(u.dtype == torch.bfloat16 for u in updates)
        assert conflicts.shape == (4, 4) and conflicts.dtype == torch.long


# ---------------------------------------------------------------------------
# CUDA (skipped without a GPU): the same op on the device against the CPU op.

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
class TestCUDA:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("k", [1, 2, 5, 7])
    def test_matches_cpu(self, k, dtype):
        total = sum(int(torch.Size(s).numel()) for s in SHAPES) + 2**17 + 3
        flat = conflicting_grads(k, total, torch.float64, seed=k).to(dtype)
        parts = split_like(flat, SHAPES + [(2**17 + 3,)])
        order = ops.pcgrad_order(k, "random", 4)
        cpu = ops.pcgrad(parts, order)
        dev = ops.pcgrad([t.cuda() for t in parts], order)
        exact = ref.pcgrad([t.double() for t in parts], order)
        assert torch.equal(dev.conflicts.cpu(), exact.conflicts)
        scale = float(flat.abs().max().double()) * k
        tol = {torch.float64: 1e-11, torch.float32: 2e-5}.get(dtype, 4 * torch.finfo(dtype).eps) * scale
        for d, c, e in zip(dev.update, cpu.update, exact.update):
            assert d.device.type == "cuda" and d.dtype == dtype and d.shape == c.shape
            torch.testing.assert_close(d.cpu().double(), e, rtol=0, atol=tol)
            torch.testing.assert_close(d.cpu().double(), c.double(), rtol=0, atol=tol)

    def test_noncontiguous_and_tensor_input(self):
        for name, t in noncontiguous_cases(4):
            order = ops.pcgrad_order(4, "fixed")
            got = ops.pcgrad([t.cuda()], order)
            want = ops.pcgrad([t], order)
            torch.testing.assert_close(got.update[0].cpu(), want.update[0], rtol=0, atol=1e-11)
        g = conflicting_grads(3, 1001, seed=1).cuda()
        r = ops.pcgrad(g, "random", generator=3)
        torch.testing.assert_close(r.update.cpu(), ops.pcgrad(g.cpu(), "random", generator=3).update,
                                   rtol=0, atol=1e-11)

    def test_hand_case_and_zero(self):
        r = ops.pcgrad(HAND.cuda(), torch.tensor([[2, 1], [2, 0], [1, 0]]))
        assert r.conflicts.tolist() == HAND_CONFLICTS
        torch.testing.assert_close(r.update.cpu(), torch.tensor([0.5, 0.0], dtype=torch.float64))
        z = ops.pcgrad(torch.zeros(3, 10, device="cuda"), "fixed")
        assert z.update.abs().sum() == 0 and z.conflicts.sum() == 0
        e = ops.pcgrad([torch.zeros(2, 0, device="cuda"), torch.ones(2, 3, device="cuda")], "fixed")
        assert e.update[0].shape == (0,) and torch.equal(e.update[1].cpu(), torch.full((3,), 2.0))

    def test_deterministic_and_no_sync(self):
        parts = [t.cuda() for t in split_like(conflicting_grads(5, 300_000, torch.float32, seed=6),
                                               [(200_000,), (1000, 100)])]
        order = ops.pcgrad_order(5, "random", 9).cuda()
        first = RAW(parts, order, SUM)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            again = RAW(parts, order, SUM)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for u, v in zip(first[0], again[0]):
            assert torch.equal(u, v)
        assert torch.equal(first[1], again[1])

    def test_opcheck(self):
        parts = [t.cuda() for t in split_like(conflicting_grads(3, 67, torch.float32, seed=5), [(6, 10), (7,)])]
        torch.library.opcheck(RAW, (parts, ops.pcgrad_order(3, "fixed").cuda(), SUM))


# ---------------------------------------------------------------------------
# per_loss_gradients and apply_update (ktgfast.train.gradients).

@pytest.fixture
def fresh_fallback():
    gradients.reset_batched_fallback()
    yield
    gradients.reset_batched_fallback()


class HostScale(torch.autograd.Function):
    """x * 2 whose backward reads a value on the host: vmap cannot batch it,
    so the batched backward fails half-way through the graph."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        ok = float(grad.abs().sum().item() >= 0)
        return grad * 2 * ok


class SmallNet(nn.Module):
    def __init__(self, host_op: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 3)
        self.unused = nn.Parameter(torch.randn(2, 5))  # no loss reaches it
        self.host_op = host_op

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        if self.host_op:
            h = HostScale.apply(h)
        return self.head(h.flatten(1))


def make_losses(net: nn.Module, seed: int = 0) -> torch.Tensor:
    """Three losses of one forward (BatchNorm in train mode): per-output-unit
    squared errors, and a loss that depends only on the first unit."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 8, 8, generator=g)
    out = net(x)
    target = torch.randn(8, 3, generator=g)
    return torch.stack([(out[:, 0] - target[:, 0]).pow(2).mean(),
                        (out - target).pow(2).mean(),
                        out[:, 2].sum() * 0.1])


def separate_backwards(net: nn.Module, seed: int = 0) -> list[torch.Tensor]:
    """K plain .backward() calls, one forward each (same inputs, fresh BN batch stats)."""
    params = list(net.parameters())
    rows = []
    for k in range(3):
        net.zero_grad(set_to_none=True)
        make_losses(net, seed)[k].backward()
        rows.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params])
    net.zero_grad(set_to_none=True)
    return [torch.stack([r[t] for r in rows]) for t in range(len(params))]


def test_per_loss_gradients_batched_equals_separate(fresh_fallback):
    torch.manual_seed(0)
    net = SmallNet().train()
    want = separate_backwards(net)
    params = list(net.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the batched path must not fall back
        got = gradients.per_loss_gradients(make_losses(net), params)
    assert gradients.batched_fallback_reason() is None
    assert len(got) == len(params)
    for g, w, p in zip(got, want, params):
        assert g.shape == (3, *p.shape)
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    unused = next(t for t, p in enumerate(params) if p is net.unused)
    assert torch.equal(got[unused], torch.zeros(3, 2, 5))
    assert all(p.grad is None for p in params)
    loop = gradients.per_loss_gradients(make_losses(net), params, batched=False)
    for g, w in zip(loop, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_per_loss_gradients_falls_back_once(fresh_fallback):
    """A backward vmap cannot batch: K separate backwards (the graph survives
    the failed attempt), one warning, and the fallback is remembered."""
    torch.manual_seed(0)
    net = SmallNet(host_op=True).train()
    want = separate_backwards(net)
    params = list(net.parameters())
    with pytest.warns(RuntimeWarning, match="batched backward failed"):
        got = gradients.per_loss_gradients(make_losses(net), params)
    assert "item" in gradients.batched_fallback_reason()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # remembered: no second attempt, no second warning
        again = gradients.per_loss_gradients(make_losses(net), params)
    for g, w in zip(again, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_per_loss_gradients_retain_graph_and_errors(fresh_fallback):
    net = SmallNet().train()
    params = list(net.parameters())
    losses = make_losses(net)
    for batched in (True, False):
        a = gradients.per_loss_gradients(losses, params, batched=batched, retain_graph=True)
        b = gradients.per_loss_gradients(losses, params, batched=batched, retain_graph=True)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
    with pytest.raises(ValueError, match=r"\(K,\) tensor"):
        gradients.per_loss_gradients(losses.sum(), params)
    with pytest.raises(ValueError, match="params is empty"):
        gradients.per_loss_gradients(losses, [])
    # A genuine error (no graph) is raised, and does not disable the batched path.
    with pytest.raises(RuntimeError):
        gradients.per_loss_gradients(torch.ones(3), params)
    assert gradients.batched_fallback_reason() is None


def test_pcgrad_training_step(fresh_fallback):
    """per_loss_gradients -> pcgrad -> apply_update -> optimizer.step."""
    torch.manual_seed(0)
    net = SmallNet().train()
    params = list(net.parameters())
    grads = gradients.per_loss_gradients(make_losses(net), params)
    result = ops.pcgrad(grads, "random", generator=0)
    want = ref.pcgrad(grads, ops.pcgrad_order(3, "random", 0))
    before = [p.detach().clone() for p in params]
    gradients.apply_update(params, result.update)
    for p, w in zip(params, want.update):
        torch.testing.assert_close(p.grad, w, rtol=1e-5, atol=1e-6)
    torch.optim.SGD(params, lr=0.1).step()
    for p, b, w in zip(params, before, want.update):
        torch.testing.assert_close(p.detach(), b - 0.1 * w, rtol=1e-5, atol=1e-6)
    # A second update replaces (not adds to) the existing .grad.
    gradients.apply_update(params, [torch.ones_like(p) for p in params])
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in params)
    with pytest.raises(ValueError, match="update tensors"):
        gradients.apply_update(params, result.update[:-1])
    with pytest.raises(ValueError, match=r"update\[0\] has shape"):
        gradients.apply_update(params[:1], [torch.zeros(1)])
