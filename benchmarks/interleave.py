"""Timing the implementations of one benchmark group interleaved (A B C A B C
...; the order rotated every round), so load from other work on a shared
machine hits every implementation alike instead of whichever ran during a
busy minute; the samples are then stored into each implementation's own
pytest-benchmark entry, so JSON, tables and ``ktgfast.bench`` see ordinary
benchmarks."""
from __future__ import annotations

import time
from typing import Callable


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup_rounds: int = 1,
                     sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of every ``fns[name]()``, ``rounds`` samples each,
    round r calling them in the order rotated by r."""
    names = list(fns)
    for _ in range(warmup_rounds):
        for n in names:
            fns[n]()
    if sync:
        sync()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            fns[n]()
            if sync:
                sync()
            samples[n].append(time.perf_counter() - t0)
    return samples


def record(benchmark, samples: list[float]) -> None:
    """Store samples timed by ``time_interleaved`` as this benchmark's rounds
    (one iteration each), the way ``benchmark.pedantic`` stores its own."""
    if getattr(benchmark, "disabled", False):
        return
    stats = benchmark._make_stats(1)
    for s in samples:
        stats.update(s)
    benchmark._mode = "benchmark.pedantic(...)"  # used: interleaved rounds
