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
from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from ktgfast import ops, reference  # noqa: E402
from ktgfast.edges import AttentionEdgeTable, EdgeSpec  # noqa: E402
from attention_crop_baselines import VectorTable, per_sample_loop, vectorised  # noqa: E402
from interleave import DEVICE, Groups, Prepared, fused, guarded, per_node, record  # noqa: E402
from ktgfast.bench.timing import Budget  # noqa: E402

SUITE = {  # read by ktgfast.bench (ast.literal_eval: literals only)
    "name": "attention_crop",
    "title": "attention_crop_loss, forward + backward",
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


def prepare(impl: str, case: Case, maps, logits, labels) -> Prepared:
    specs = case.specs()
    progress = torch.tensor(PROGRESS, dtype=torch.float64, device=maps.device)

    if impl == "per_sample_loop":
        leaves = [maps[t].clone().requires_grad_() for t in range(case.M)]
        node_logits = [logits[t] for t in range(case.M)]
        return per_node(leaves, lambda: per_sample_loop(leaves, node_logits, labels, specs, PROGRESS, case.crops))
    if impl == "vectorised":
        table = VectorTable.build(specs, device=maps.device)  # built once, outside the timed region

        def loss(q):
            return vectorised(q, logits, labels, table, progress, case.crops)
    elif impl == "ktgfast":
        table = AttentionEdgeTable(specs, case.M, device=maps.device)

        def loss(q):
            return ops.attention_crop_loss(q, logits, labels, table, progress, case.crops).node_loss
    else:
        raise ValueError(impl)
    return fused(maps.clone().requires_grad_(), loss)


def expected(case: Case, maps, logits, labels):
    """ktgfast's node losses and gradient; ktgfast itself checked in float64
    against the reference on a slice of the batch (the reference is slow)."""
    specs = case.specs()
    progress = torch.tensor(PROGRESS, dtype=torch.float64, device=maps.device)
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


# the per-sample loop takes ~1 s a call: rounds follow it, faster rows repeat within a round
GROUPS = Groups(Budget(seconds=SECONDS, min_rounds=5, max_rounds=1000, warmup_rounds=2, probe_calls=3,
                       max_repeats=10))


def prepare_group(case: Case):
    """Every implementation of one case, checked against ktgfast (node losses
    and gradients) before it may be timed."""
    maps, logits, labels = (t.to(DEVICE) for t in make_inputs(case))
    want = expected(case, maps, logits, labels)
    preps = {impl: prepare(impl, case, maps, logits, labels) for impl in IMPLS}
    return guarded(preps, want, rtol=1e-4, atol=(1e-6, 1e-7))


@pytest.mark.parametrize(
    "case,impl",
    [(c, i) for c in CASES for i in IMPLS],
    ids=[f"{c.id}-{i}" for c in CASES for i in IMPLS],
)
def test_attention_crop_fwd_bwd(benchmark, case: Case, impl: str):
    timing, info = GROUPS.get(case.id, lambda: prepare_group(case))
    benchmark.group = case.group
    benchmark.extra_info.update(net=case.net, variant=case.variant, M=case.M, B=B, H=case.hw, W=case.hw,
                                crops=list(case.crops), edges=len(case.specs()),
                                threads=torch.get_num_threads())
    record(benchmark, timing, info, impl)
