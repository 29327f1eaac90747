"""The suites' side of interleaved timing (``ktgfast.bench.timing``): each
benchmark group is checked and timed once, by its first test, with all its
implementations interleaved; every test then stores its own samples into its
pytest-benchmark entry, so JSON, tables and ``ktgfast bench`` see ordinary
benchmarks.  The device comes from ``KTGFAST_BENCH_DEVICE`` (set by
``ktgfast bench --device``): CPU wall time, or CUDA events with peak memory.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ktgfast.bench.timing import Budget, GroupTiming, time_group

DEVICE = os.environ.get("KTGFAST_BENCH_DEVICE", "cpu")

Prepare = Callable[[], "tuple[dict[str, Callable[[], object]], dict[str, dict]]"]


@dataclass
class Prepared:
    fn: Callable[[], object]      # the timed callable: forward + backward of all edges
    result: Callable[[], tuple]   # () -> (node_loss, grad) of one call, for the guard


def per_node(leaves: list[torch.Tensor], run: Callable[[], list]) -> Prepared:
    """A baseline with one leaf per node: ``run()`` computes and
    back-propagates every node's loss itself (a tensor, or 0 for a node
    without an active edge)."""
    def fn():
        for q in leaves:
            q.grad = None
        return run()

    def result():
        dev = leaves[0].device
        node = torch.stack([torch.as_tensor(x, dtype=torch.float32, device=dev).detach() for x in fn()])
        grad = torch.stack([q.grad if q.grad is not None else torch.zeros_like(q) for q in leaves])
        return node, grad

    return Prepared(fn, result)


def fused(leaf: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]) -> Prepared:
    """An implementation on one (M, ...) leaf: ``loss(leaf)`` is the (M,)
    node loss, timed with the backward of its sum."""
    def fn():
        leaf.grad = None
        node = loss(leaf)
        node.sum().backward()
        return node

    def result():
        node = fn()
        return node.detach(), leaf.grad

    return Prepared(fn, result)


def guarded(preps: dict[str, Prepared], want: tuple, rtol: float, atol: tuple[float, float]):
    """Call every implementation once (compiles, warms caches) and check its
    node losses and gradient against ``want``: no implementation that
    disagrees is ever timed.  Returns the timed callables and their info."""
    fns, info = {}, {}
    for impl, prep in preps.items():
        t0 = time.perf_counter()
        got = prep.result()
        first_call_s = time.perf_counter() - t0
        for g, w, a, what in zip(got, want, atol, ("node loss", "gradient")):
            torch.testing.assert_close(g, w, rtol=rtol, atol=a, msg=lambda m: f"{impl}, {what}: {m}")
        fns[impl], info[impl] = prep.fn, {"first_call_s": round(first_call_s, 4)}
    return fns, info


class Groups:
    """Timings of a suite's groups: ``get(key, prepare)`` runs ``prepare()``
    (the timed callables and per-implementation info, after any correctness
    check) and times them the first time a group is asked for."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self._done: dict[object, tuple[GroupTiming, dict[str, dict]]] = {}

    def get(self, key, prepare: Prepare) -> tuple[GroupTiming, dict[str, dict]]:
        if key not in self._done:
            fns, info = prepare()
            self._done[key] = (time_group(fns, self.budget, DEVICE), info)
        return self._done[key]


def record(benchmark, timing: GroupTiming, info: dict[str, dict], impl: str) -> None:
    """Store ``impl``'s interleaved samples as this benchmark's rounds (one
    iteration each, the way ``benchmark.pedantic`` stores its own), with the
    timer and the peak memory (None where not measured) in ``extra_info``;
    an ``images_per_round`` in ``info`` adds ``images_per_s`` (of the median)."""
    samples = timing.samples[impl]
    benchmark.extra_info.update(impl=impl, interleaved=True, timer=timing.timer, device=DEVICE,
                                peak_memory_bytes=timing.peak_bytes.get(impl), **info.get(impl, {}))
    per_round = benchmark.extra_info.get("images_per_round")
    if per_round:
        benchmark.extra_info["images_per_s"] = per_round / statistics.median(samples)
    if getattr(benchmark, "disabled", False):
        return
    stats = benchmark._make_stats(1)
    for s in samples:
        stats.update(s)
    benchmark._mode = "benchmark.pedantic(...)"  # used: interleaved rounds
