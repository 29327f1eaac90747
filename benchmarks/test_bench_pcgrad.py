"""PCGrad of K = 5 gradients of ResNet-18's size: ktgfast vs the per-pair
loop of public PCGrad implementations, measured in the same run (on the CPU,
or on the GPU with ``ktgfast bench --device cuda``).

Implementations, one benchmark group per input so they sit side by side:

* ``per_pair_loop``  (a) public-PCGrad style: for each task i a clone of g_i,
                     the other tasks in a ``random.shuffle``d order, ``torch.dot``
                     and ``if dot < 0`` per pair (a host sync on a GPU), an
                     in-place projection; the sum.  For the list input the
                     per-parameter gradients are concatenated first and the
                     update split back, as those implementations do;
* ``gram_torch``     (c) the Gram formulation in plain PyTorch (float32 GEMMs
                     ``g_t @ g_t.T`` summed over tensors, the K^3 recurrence in
                     Python, ``w @ g_t``): how much is the algorithm, how much
                     the kernel;
* ``ktgfast``        (b) ``ktgfast.ops.pcgrad(grads, "random", generator)``.

Inputs: ``flat`` a (5, 11_000_000) float32 tensor; ``resnet18`` the 62
parameter tensors of ResNet-18 (1000 classes, 11.7 M parameters) as a list of
(5, *shape) tensors.  Before timing, each implementation is checked against the
float64 reference with one fixed order, so no wrong code is timed.  Speed is
never asserted; the implementations of an input are timed interleaved
(``interleave.py``); print the ratios with

    python -m ktgfast.bench --from-json benchmarks/results/cpu_pcgrad.json

Run by path (``testpaths`` excludes this folder):
    python -m pytest benchmarks/test_bench_pcgrad.py \
        --benchmark-json=benchmarks/results/cpu_pcgrad.json
``KTGFAST_BENCH_SECONDS`` (default 1.0) is the timed budget per benchmark.
"""
from __future__ import annotations

import os
import random
import sys
import time

if __name__ == "__main__":  # the ratio report, run as a script from the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from interleave import DEVICE, Groups, record  # noqa: E402  (benchmarks/ is on sys.path via conftest)
from ktgfast.bench.timing import Budget  # noqa: E402
from ktgfast import ops, reference  # noqa: E402
from ktgfast.models import build_model  # noqa: E402

SUITE = {  # read by ktgfast.bench (ast.literal_eval: literals only)
    "name": "pcgrad",
    "title": "pcgrad of K = 5 ResNet-18-sized gradients",
    "ktgfast": "ktgfast",
    "references": {"per_pair_loop": "(a) per-pair loop", "gram_torch": "(c) Gram in torch"},
    "goals": [],  # no issue set a ratio goal for pcgrad; the report shows the ratios only
}

if not ops.extension_available():
    pytest.skip("ktgfast._C is not built", allow_module_level=True)

K = 5
FLAT_P = 11_000_000
SECONDS = float(os.environ.get("KTGFAST_BENCH_SECONDS", "1.0"))
CASES = ["flat", "resnet18"]
IMPLS = ["per_pair_loop", "gram_torch", "ktgfast"]


def resnet18_shapes() -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in build_model("resnet18", 1000).parameters()]


def make_grads(case: str) -> torch.Tensor | list[torch.Tensor]:
    """Gradients with a shared component, so that about half the pairs conflict."""
    g = torch.Generator().manual_seed(0)
    shapes = [(FLAT_P,)] if case == "flat" else resnet18_shapes()
    out = []
    for s in shapes:
        n = int(torch.Size(s).numel())
        common = torch.randn(n, generator=g)
        sign = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0])[:, None]
        out.append((sign * common + torch.randn(K, n, generator=g)).reshape(K, *s))
    return out[0].reshape(K, FLAT_P) if case == "flat" else out


# ---------------------------------------------------------------------------
# (a) the per-pair loop.

def per_pair_loop(grads, orders=None):
    """``orders``: a fixed (K, K-1) order (for the check); None: shuffle per i."""
    as_list = not isinstance(grads, torch.Tensor)
    flat = torch.cat([g.reshape(K, -1) for g in grads], dim=1) if as_list else grads
    rows = [flat[i] for i in range(K)]
    projected = [r.clone() for r in rows]
    for i, gi in enumerate(projected):
        others = [j for j in range(K) if j != i]
        if orders is None:
            random.shuffle(others)
        else:
            others = orders[i].tolist()
        for j in others:
            dot = torch.dot(gi, rows[j])
            if dot < 0:  # host sync on a GPU
                gi -= dot / rows[j].norm() ** 2 * rows[j]
    update = torch.stack(projected).sum(0)
    if not as_list:
        return update
    out, start = [], 0
    for g in grads:
        n = g[0].numel()
        out.append(update[start:start + n].view(g.shape[1:]))
        start += n
    return out


# ---------------------------------------------------------------------------
# (c) the Gram formulation in plain PyTorch.

def gram_torch(grads, orders):
    as_list = not isinstance(grads, torch.Tensor)
    parts = [g.reshape(K, -1) for g in grads] if as_list else [grads]
    gram = sum(p @ p.T for p in parts).double().tolist()
    weights = [0.0] * K
    for i in range(K):
        a = [float(l == i) for l in range(K)]
        for j in orders[i].tolist():
            dot = sum(a[l] * gram[l][j] for l in range(K))
            if dot < 0 and gram[j][j] > 0:
                a[j] -= dot / gram[j][j]
        weights = [w + x for w, x in zip(weights, a)]
    w = torch.tensor(weights, dtype=parts[0].dtype, device=parts[0].device)
    out = [(w @ p).view(g.shape[1:]) for p, g in zip(parts, grads)] if as_list else [w @ grads]
    return out if as_list else out[0]


# ---------------------------------------------------------------------------

def prepare(impl: str, grads):
    """The timed callable (random orders, as in training) and a checked
    callable with a given order."""
    if impl == "per_pair_loop":
        return (lambda: per_pair_loop(grads)), (lambda order: per_pair_loop(grads, order))
    if impl == "gram_torch":
        gen = torch.Generator().manual_seed(1)
        return (lambda: gram_torch(grads, ops.pcgrad_order(K, "random", gen))), (
            lambda order: gram_torch(grads, order))
    if impl == "ktgfast":
        gen = torch.Generator().manual_seed(1)
        return (lambda: ops.pcgrad(grads, "random", gen).update), (
            lambda order: ops.pcgrad(grads, order).update)
    raise ValueError(impl)


def check(update, grads, order) -> float:
    """Max abs error against the float64 literal reference; fails beyond 1e-3
    of the update's size (float32 dots over 11 M elements are that coarse)."""
    want = reference.pcgrad([g.double() for g in grads] if isinstance(grads, list) else grads.double(),
                            order).update
    got = update if isinstance(update, list) else [update]
    want = want if isinstance(want, list) else [want]
    err = max(float((u.double() - w).abs().max()) for u, w in zip(got, want))
    size = max(float(w.abs().max()) for w in want)
    assert err <= 1e-3 * size, f"max abs error {err} vs the float64 reference (update size {size})"
    return err


@pytest.fixture(scope="module")
def inputs():
    return {case: to_device(make_grads(case)) for case in CASES}


def to_device(grads):
    return grads.to(DEVICE) if isinstance(grads, torch.Tensor) else [g.to(DEVICE) for g in grads]


# the per-pair loop takes ~1 s a call: rounds follow it, ktgfast repeats within a round for more samples
GROUPS = Groups(Budget(seconds=SECONDS, min_rounds=5, max_rounds=1000, warmup_rounds=1, probe_calls=2,
                       max_repeats=10))


def prepare_group(grads) -> tuple[dict, dict]:
    """Every implementation of one input, checked against the float64
    reference with one fixed order before it may be timed."""
    order = ops.pcgrad_order(K, "random", 123)
    fns, info = {}, {}
    for impl in IMPLS:
        fn, checked = prepare(impl, grads)
        t0 = time.perf_counter()
        err = check(checked(order), grads, order)  # never time a wrong implementation
        fns[impl] = fn
        info[impl] = {"first_call_s": round(time.perf_counter() - t0, 4), "max_abs_err_vs_float64": err}
    return fns, info


@pytest.mark.parametrize(
    "case,impl", [(c, i) for c in CASES for i in IMPLS], ids=[f"{c}-{i}" for c in CASES for i in IMPLS]
)
def test_pcgrad(benchmark, inputs, case: str, impl: str):
    grads = inputs[case]
    timing, info = GROUPS.get(case, lambda: prepare_group(grads))
    numel = grads.numel() if case == "flat" else sum(g.numel() for g in grads)
    benchmark.group = f"{case} K={K} P={numel // K}"
    benchmark.extra_info.update(case=case, K=K, P=numel // K, tensors=1 if case == "flat" else len(grads),
                                threads=torch.get_num_threads())
    record(benchmark, timing, info, impl)


if __name__ == "__main__":  # old command: the report of a saved run
    from ktgfast.bench.cli import main

    sys.exit(main(["--from-json", *sys.argv[1:]]))
