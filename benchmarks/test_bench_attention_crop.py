"""Forward + backward of every attention edge of a graph (thesis eqs. 4.8-4.9):
ktgfast vs two PyTorch baselines, all measured in the same run (issue:
benchmark of ``attention_crop_loss`` on CPU).

Implementations, one benchmark group per case so they sit side by side:

* ``per_sample_loop``  (a) public ensemble-KTG style: a Python loop over edges
                       and samples, ``.item()`` for the arg-max, one slice and
                       ``F.normalize`` per crop, one ``backward`` per node, a
                       separate (B, H, W) leaf per node
                       (``attention_crop_baselines.per_sample_loop``);
* ``vectorised``       (b) eager PyTorch without a loop over samples: batched
                       arg-max, windows by index arithmetic and one gather per
                       crop size, (E, B) gates
                       (``attention_crop_baselines.vectorised``);
* ``ktgfast``          (c) ``ktgfast.ops.attention_crop_loss``, edge table and the
                       float64 progress tensor built once outside the timing.

(b) and (c) time ``node_loss.sum().backward()`` on one (M, B, H, W) leaf.
Before timing, every implementation's node losses and gradients are checked
against ktgfast (and ktgfast against the float64 reference), so no wrong code
is timed.  The implementations of a case are timed interleaved (``interleave.py``).
Speed is never asserted here: ``python -m ktgfast.bench attention_crop`` prints the ratios.

Run by path (``testpaths`` excludes this folder):
    python -m pytest benchmarks/test_bench_attention_crop.py \
        --benchmark-json=benchmarks/results/cpu_attention_crop.json
``KTGFAST_BENCH_SECONDS`` (default 1.0) is the timed budget per benchmark.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from ktgfast import ops, reference  # noqa: E402
from ktgfast.edges import AttentionEdgeTable, EdgeSpec  # noqa: E402
from attention_crop_baselines import VectorTable, per_sample_loop, vectorised  # noqa: E402
from interleave import record, time_interleaved  # noqa: E402

SUITE = {  # read by ktgfast.bench (ast.literal_eval: literals only)
    "name": "attention_crop",
    "title": "attention_crop_loss, forward + backward (CPU)",
    "ktgfast": "ktgfast",
    "references": {"per_sample_loop": "(a) per-sample loop", "vectorised": "(b) vectorised"},
    "goals": [{"group": "abn16 mixed M=4", "ref": "per_sample_loop", "min": 10.0},
              {"group": "abn16 mixed M=4", "ref": "vectorised", "min": 2.0},
              {"group": "resnet8 mixed M=4", "ref": "per_sample_loop", "min": 10.0},
              {"group": "resnet8 mixed M=4", "ref": "vectorised", "min": 2.0}],
}

if not ops.extension_available():
    pytest.skip("ktgfast._C is not built", allow_module_level=True)

B = 128
C = 100
SECONDS = float(os.environ.get("KTGFAST_BENCH_SECONDS", "1.0"))
MIN_ROUNDS, MAX_ROUNDS = 5, 1000
PROGRESS = 0.3  # k / k_end: the linear gate's weight


def graph(m: int, variant: str) -> list[EdgeSpec]:
    """Every ordered pair of distinct nodes: M(M-1) edges.  ``pull``: Att(+)
    through on every edge; ``mixed``: pull / push alternating, gates cycling
    through / correct / linear (the thesis's attention edges)."""
    pairs = [(s, t) for t in range(m) for s in range(m) if s != t]
    if variant == "pull":
        return [EdgeSpec(s, t, "pull") for s, t in pairs]
    return [EdgeSpec(s, t, ("pull", "push")[i % 2], gate=("through", "correct", "linear")[i % 3])
            for i, (s, t) in enumerate(pairs)]


@dataclass(frozen=True)
class Case:
    net: str  # "abn16": ABN-ResNet20, 16 x 16 maps, crops (3, 7, 11); "resnet8": 8 x 8, (3, 5, 7)
    variant: str
    M: int

    @property
    def hw(self) -> int:
        return 16 if self.net == "abn16" else 8

    @property
    def crops(self) -> tuple[int, ...]:
        return (3, 7, 11) if self.net == "abn16" else (3, 5, 7)

    @property
    def group(self) -> str:
        return f"{self.net} {self.variant} M={self.M}"

    @property
    def id(self) -> str:
        return f"{self.net}-{self.variant}-M{self.M}"

    def specs(self) -> list[EdgeSpec]:
        return graph(self.M, self.variant)


CASES = [Case("abn16", "mixed", 4), Case("abn16", "pull", 4), Case("resnet8", "mixed", 4),
         Case("abn16", "mixed", 2)]
IMPLS = ["per_sample_loop", "vectorised", "ktgfast"]


def make_inputs(case: Case):
    """Attention-like maps (non-negative, one bump per map at a random place,
    so crops meet the borders too) and logits of partly trained nodes."""
    g = torch.Generator().manual_seed(100 * case.M + case.hw)
    hw = case.hw
    yy, xx = torch.meshgrid(torch.arange(hw), torch.arange(hw), indexing="ij")
    cy = torch.randint(0, hw, (case.M, B, 1, 1), generator=g)
    cx = torch.randint(0, hw, (case.M, B, 1, 1), generator=g)
    bump = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2).float() / (0.1 * hw * hw))
    maps = bump + 0.3 * torch.rand(case.M, B, hw, hw, generator=g)
    labels = torch.randint(0, C, (B,), generator=g)
    logits = 2.0 * torch.randn(case.M, B, C, generator=g)
    logits[:, torch.arange(B), labels] += (torch.rand(case.M, B, generator=g) < 0.5).float() * 8.0
    return maps, logits, labels


@dataclass
class Prepared:
    fn: object      # the timed callable: forward + backward of all edges
    result: object  # () -> (node_loss, grad) of one call, for the guard


def prepare(impl: str, case: Case, maps, logits, labels) -> Prepared:
    specs = case.specs()
    progress = torch.tensor(PROGRESS, dtype=torch.float64)

    if impl == "per_sample_loop":
        leaves = [maps[t].clone().requires_grad_() for t in range(case.M)]
        node_logits = [logits[t] for t in range(case.M)]

        def fn():
            for q in leaves:
                q.grad = None
            return per_sample_loop(leaves, node_logits, labels, specs, PROGRESS, case.crops)

        def result():
            losses = fn()
            node = torch.stack([torch.as_tensor(l, dtype=torch.float32).detach() for l in losses])
            grad = torch.stack([q.grad if q.grad is not None else torch.zeros_like(q) for q in leaves])
            return node, grad

        return Prepared(fn, result)

    q = maps.clone().requires_grad_()
    if impl == "vectorised":
        table = VectorTable.build(specs)  # built once, outside the timed region

        def loss(q):
            return vectorised(q, logits, labels, table, progress, case.crops)
    elif impl == "ktgfast":
        table = AttentionEdgeTable(specs, case.M)

        def loss(q):
            return ops.attention_crop_loss(q, logits, labels, table, progress, case.crops).node_loss
    else:
        raise ValueError(impl)

    def fn():
        q.grad = None
        node = loss(q)
        node.sum().backward()
        return node

    def result():
        node = fn()
        return node.detach(), q.grad

    return Prepared(fn, result)


def expected(case: Case, maps, logits, labels):
    """ktgfast's node losses and gradient; ktgfast itself checked in float64
    against the reference on a slice of the batch (the reference is slow)."""
    specs = case.specs()
    progress = torch.tensor(PROGRESS, dtype=torch.float64)
    q = maps.clone().requires_grad_()
    node = ops.attention_crop_loss(q, logits, labels, specs, progress, case.crops).node_loss
    node.sum().backward()
    n = 16
    q64 = maps[:, :n].double().requires_grad_()
    q32 = maps[:, :n].clone().requires_grad_()
    args = (logits[:, :n], labels[:n], specs, progress, case.crops)
    node64 = reference.attention_crop_loss(q64, *args).node_loss
    node64.sum().backward()
    node32 = ops.attention_crop_loss(q32, *args).node_loss
    node32.sum().backward()
    torch.testing.assert_close(node32.double(), node64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q32.grad.double(), q64.grad, rtol=1e-4, atol=1e-7)
    return node.detach(), q.grad


def rounds_for(fn) -> int:
    """Rounds that fill about SECONDS of timed work (measured on warm calls)."""
    t0 = time.perf_counter()
    n = 0
    while n < 3 or time.perf_counter() - t0 < 0.05:
        fn()
        n += 1
    per_call = (time.perf_counter() - t0) / n
    return int(min(MAX_ROUNDS, max(MIN_ROUNDS, SECONDS / per_call)))


_GROUPS: dict[str, dict] = {}  # case id -> {"samples": ..., "info": ...}, timed once per group


def group_timings(case: Case) -> dict:
    """All implementations of one case, checked, then timed interleaved
    (``interleave.time_interleaved``); the first test of a case pays for the
    whole group, the others read their samples."""
    if case.id in _GROUPS:
        return _GROUPS[case.id]
    maps, logits, labels = make_inputs(case)
    want_node, want_grad = expected(case, maps, logits, labels)
    preps, info = {}, {}
    for impl in IMPLS:
        prep = prepare(impl, case, maps, logits, labels)
        t0 = time.perf_counter()
        node, grad = prep.result()
        first_call_s = time.perf_counter() - t0
        # Correctness guard: never time an implementation that disagrees with ktgfast.
        torch.testing.assert_close(node, want_node, rtol=1e-4, atol=1e-6, msg=lambda m: f"{impl}: {m}")
        torch.testing.assert_close(grad, want_grad, rtol=1e-4, atol=1e-7, msg=lambda m: f"{impl}: {m}")
        preps[impl], info[impl] = prep, {"first_call_s": round(first_call_s, 4)}
    rounds = min(rounds_for(p.fn) for p in preps.values())  # the slowest one's budget; also the warm-up
    samples = time_interleaved({i: p.fn for i, p in preps.items()}, rounds, warmup_rounds=2)
    _GROUPS[case.id] = {"samples": samples, "info": info}
    return _GROUPS[case.id]


@pytest.mark.parametrize(
    "case,impl",
    [(c, i) for c in CASES for i in IMPLS],
    ids=[f"{c.id}-{i}" for c in CASES for i in IMPLS],
)
def test_attention_crop_fwd_bwd(benchmark, case: Case, impl: str):
    timings = group_timings(case)
    benchmark.group = case.group
    benchmark.extra_info.update(
        impl=impl, net=case.net, variant=case.variant, M=case.M, B=B, H=case.hw, W=case.hw,
        crops=list(case.crops), edges=len(case.specs()), threads=torch.get_num_threads(), interleaved=True,
        **timings["info"][impl],
    )
    record(benchmark, timings["samples"][impl])
