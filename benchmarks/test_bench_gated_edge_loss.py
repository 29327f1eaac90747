"""Forward + backward of every edge of a KTG graph: ktgfast vs three references,
all measured in the same run (issue: benchmark of ``gated_edge_loss`` on CPU).

Implementations, one benchmark group per graph so they sit side by side:

* ``per_edge_loop``       (a) public-KTG style: one functional loss and gate per
                          edge, ``.item()`` checks, one ``backward`` per node
                          (``per_edge_loop.py``), separate (B, C) leaf per node;
* ``reference``           (b) ``ktgfast.reference.gated_edge_loss`` (eager);
* ``reference_compiled``  (c) ``torch.compile`` of (b), compiled and warmed up
                          outside the timed region;
* ``ktgfast``             (d) ``ktgfast.ops.gated_edge_loss``, EdgeTable and the
                          float64 progress tensor built once outside the timing.

(b)-(d) time ``node_loss.sum().backward()`` on one (M, B, C) leaf.  Before
timing, every implementation's node losses and gradients are checked against
ktgfast (and ktgfast against the float64 reference), so no wrong code is timed.
The implementations of one graph are timed interleaved (round r calls them in
an order rotated by r, ``interleave.py``), so load on a shared machine hits
them alike.  Speed is never asserted here: ``python -m ktgfast.bench
gated_edge_loss`` runs this file and prints the ratios.

Run by path (``testpaths`` excludes this folder):
    python -m pytest benchmarks/test_bench_gated_edge_loss.py \
        --benchmark-json=benchmarks/results/cpu_gated_edge_loss.json
``KTGFAST_BENCH_SECONDS`` (default 1.0) is the timed budget per benchmark.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from ktgfast import ops, reference  # noqa: E402
from ktgfast.edges import EdgeSpec, EdgeTable  # noqa: E402
from interleave import DEVICE, Groups, Prepared, fused, guarded, per_node, record  # noqa: E402  (on sys.path: conftest)
from ktgfast.bench.timing import Budget  # noqa: E402
from per_edge_loop import per_edge_loop  # noqa: E402

SUITE = {  # read by ktgfast.bench (ast.literal_eval: literals only)
    "name": "gated_edge_loss",
    "title": "gated_edge_loss, forward + backward of every edge",
    "ktgfast": "ktgfast",
    "references": {"per_edge_loop": "(a) per-edge loop", "reference": "(b) reference",
                   "reference_compiled": "(c) compiled reference"},
    "goals": [{"group": "full M=4 C=100", "ref": "per_edge_loop", "min": 10.0},
              {"group": "full M=4 C=100", "ref": "reference_compiled", "min": 1.5}],
}

if not ops.extension_available():
    pytest.skip("ktgfast._C is not built", allow_module_level=True)

B = 128
SECONDS = float(os.environ.get("KTGFAST_BENCH_SECONDS", "1.0"))
PROGRESS = 0.3  # k / k_end; linear gate 0.3, sine gate (f=1) 0.976


def full_graph(m: int) -> list[EdgeSpec]:
    """KTG / DML: label CE into every node, KL (T = 1, through) between every
    ordered pair of distinct nodes: M + M(M-1) edges."""
    edges = [EdgeSpec("label", t, loss="ce") for t in range(m)]
    edges += [EdgeSpec(s, t, loss="kl", T=1.0) for t in range(m) for s in range(m) if s != t]
    return edges


def mixed_graph(m: int) -> list[EdgeSpec]:
    """The full graph with gates cycling correct / linear / sine over the node
    edges, and one of them (0 -> 1) a cosine push instead of KL."""
    edges = [EdgeSpec("label", t, loss="ce") for t in range(m)]
    pairs = [(s, t) for t in range(m) for s in range(m) if s != t]
    for i, (s, t) in enumerate(pairs):
        gate = ("correct", "linear", "sine")[i % 3]
        loss = "cos" if (s, t) == (0, 1) else "kl"
        edges.append(EdgeSpec(s, t, loss=loss, gate=gate, T=1.0, f=1.0, phi=0.0))
    return edges


@dataclass(frozen=True)
class Case:
    variant: str
    M: int
    C: int

    @property
    def group(self) -> str:
        return f"{self.variant} M={self.M} C={self.C}"

    @property
    def id(self) -> str:
        return f"{self.variant}-M{self.M}-C{self.C}"

    def specs(self) -> list[EdgeSpec]:
        return full_graph(self.M) if self.variant == "full" else mixed_graph(self.M)


CASES = [Case("full", m, c) for m in (2, 4, 7) for c in (100, 1000)] + [Case("mixed", 4, 100)]
IMPLS = ["per_edge_loop", "reference", "reference_compiled", "ktgfast"]


def make_inputs(case: Case):
    """Logits of partly trained nodes: about half of each node's samples are
    classified correctly, so ``correct`` gates pass some samples, not ~1 %."""
    g = torch.Generator().manual_seed(1000 * case.M + case.C)
    labels = torch.randint(0, case.C, (B,), generator=g)
    logits = 2.0 * torch.randn(case.M, B, case.C, generator=g)
    boost = (torch.rand(case.M, B, generator=g) < 0.5).float() * 8.0
    logits[:, torch.arange(B), labels] += boost
    return logits, labels


def prepare(impl: str, case: Case, logits: torch.Tensor, labels: torch.Tensor) -> Prepared:
    specs = case.specs()
    table = EdgeTable(specs, case.M, device=logits.device)  # built once, outside the timed region
    progress = torch.tensor(PROGRESS, dtype=torch.float64, device=logits.device)

    if impl == "per_edge_loop":
        leaves = [logits[t].clone().requires_grad_() for t in range(case.M)]
        return per_node(leaves, lambda: per_edge_loop(leaves, labels, specs, PROGRESS))
    if impl == "reference":
        def loss(z):
            return reference.gated_edge_loss(z, labels, table, progress).node_loss
    elif impl == "reference_compiled":
        torch._dynamo.reset()  # fresh cache per graph: no recompile limit, no dynamic shapes

        def ref(z, y, p):
            return reference.gated_edge_loss(z, y, table, p).node_loss

        compiled = torch.compile(ref, dynamic=False)

        def loss(z):
            return compiled(z, labels, progress)
    elif impl == "ktgfast":
        def loss(z):
            return ops.gated_edge_loss(z, labels, table, progress).node_loss
    else:
        raise ValueError(impl)
    return fused(logits.clone().requires_grad_(), loss)


def expected(case: Case, logits, labels):
    """ktgfast's node losses and gradient; ktgfast itself checked in float64."""
    specs = case.specs()
    progress = torch.tensor(PROGRESS, dtype=torch.float64, device=logits.device)
    z = logits.clone().requires_grad_()
    node = ops.gated_edge_loss(z, labels, EdgeTable(specs, case.M, device=logits.device), progress).node_loss
    node.sum().backward()
    z64 = logits.double().requires_grad_()
    node64 = reference.gated_edge_loss(z64, labels, specs, progress).node_loss
    node64.sum().backward()
    torch.testing.assert_close(node.double(), node64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-4, atol=1e-7)
    return node.detach(), z.grad


GROUPS = Groups(Budget(seconds=SECONDS, min_rounds=5, max_rounds=1000, warmup_rounds=2, probe_calls=3))


def prepare_group(case: Case):
    """Every implementation of one case, checked against ktgfast (node losses
    and gradients) before it may be timed."""
    logits, labels = (t.to(DEVICE) for t in make_inputs(case))
    want = expected(case, logits, labels)
    preps = {impl: prepare(impl, case, logits, labels) for impl in IMPLS}
    return guarded(preps, want, rtol=1e-4, atol=(1e-5, 1e-6))


@pytest.mark.parametrize(
    "case,impl",
    [(c, i) for c in CASES for i in IMPLS],
    ids=[f"{c.id}-{i}" for c in CASES for i in IMPLS],
)
def test_gated_edge_loss_fwd_bwd(benchmark, case: Case, impl: str):
    timing, info = GROUPS.get(case.id, lambda: prepare_group(case))
    benchmark.group = case.group
    benchmark.extra_info.update(variant=case.variant, M=case.M, B=B, C=case.C, edges=len(case.specs()),
                                threads=torch.get_num_threads())
    record(benchmark, timing, info, impl)
