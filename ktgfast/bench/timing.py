"""Timing the implementations of one benchmark group interleaved (A B C A B C
...; the order rotated every round), so load from other work on a shared
machine hits every implementation alike instead of whichever ran during a
busy minute.

The clock follows the device (``TIMERS``): on the CPU ``time.perf_counter``
around the call; on CUDA a pair of CUDA events recorded around the call after
a ``torch.cuda.synchronize()`` (nothing queued before the start event counts)
and read after the end event completed, with the peak of
``torch.cuda.max_memory_allocated`` during the call.  Suites import this from
``benchmarks/interleave.py``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

CPU_MEMORY = ("not measured: the implementations of a group share one process, whose RSS the allocator "
              "does not give back between calls, so no per-implementation peak can be read honestly")
CUDA_MEMORY = ("peak CUDA memory allocated during a call (torch.cuda.max_memory_allocated after "
               "reset_peak_memory_stats), minus what was allocated before it; the largest over the timed calls")


class WallClock:
    """CPU: wall time of the call; no memory reading."""

    name = "perf_counter"
    memory = CPU_MEMORY

    def sync(self) -> None:
        pass

    def measure(self, fn: Callable[[], object]) -> tuple[float, int | None]:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, None


class CudaEvents:
    """CUDA: event time of the call on the current stream, and its peak memory."""

    name = "cuda_events"
    memory = CUDA_MEMORY

    def __init__(self):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("CUDA timing asked for, but torch.cuda.is_available() is False")
        self.cuda = torch.cuda

    def sync(self) -> None:
        self.cuda.synchronize()

    def measure(self, fn: Callable[[], object]) -> tuple[float, int | None]:
        cuda = self.cuda
        cuda.synchronize()  # the previous call's kernels are not timed here
        base = cuda.memory_allocated()
        cuda.reset_peak_memory_stats()
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, cuda.max_memory_allocated() - base


TIMERS = {"cpu": WallClock, "cuda": CudaEvents}


def timer_for(device: str):
    """The timer of ``device`` (``cpu``, ``cuda`` or ``cuda:k``)."""
    kind = device.split(":", 1)[0]
    if kind not in TIMERS:
        raise ValueError(f"benchmark device {device!r}: allowed are {', '.join(TIMERS)} (or cuda:k)")
    return TIMERS[kind]()


@dataclass
class GroupTiming:
    samples: dict[str, list[float]]               # seconds per call, one list per implementation
    peak_bytes: dict[str, int | None] = field(default_factory=dict)
    timer: str = WallClock.name


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup_rounds: int = 1,
                     timer=None, repeats: dict[str, int] | None = None) -> GroupTiming:
    """``rounds`` rounds; round r calls every ``fns[name]()`` in the order
    rotated by r, ``repeats[name]`` times in a row (default 1), each call one
    sample.  Repeats give fast implementations as many samples as their share
    of the time would, without leaving the interleaving."""
    timer = timer or WallClock()
    names = list(fns)
    repeats = {n: max(1, int((repeats or {}).get(n, 1))) for n in names}
    for _ in range(warmup_rounds):
        for n in names:
            fns[n]()
    timer.sync()
    out = GroupTiming({n: [] for n in names}, {n: None for n in names}, timer.name)
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            for _ in range(repeats[n]):
                seconds, peak = timer.measure(fns[n])
                out.samples[n].append(seconds)
                if peak is not None:
                    out.peak_bytes[n] = max(peak, out.peak_bytes[n] or 0)
    return out


def per_call(fn: Callable[[], object], min_calls: int = 3, min_seconds: float = 0.05, timer=None) -> float:
    """Seconds per warm call of ``fn``: at least ``min_calls`` calls and
    ``min_seconds`` in all."""
    timer = timer or WallClock()
    total, n = 0.0, 0
    while n < min_calls or total < min_seconds:
        total += timer.measure(fn)[0]
        n += 1
    return total / n


@dataclass
class Budget:
    """How many rounds a group gets.  ``rounds`` fixed, or (None) enough for
    about ``seconds`` of the slowest implementation, clamped to
    [min_rounds, max_rounds]; ``max_repeats`` > 1 lets faster implementations
    be called up to that many times a round (about as often as their speed
    allows), so their medians rest on more samples."""

    seconds: float = 1.0
    rounds: int | None = None
    min_rounds: int = 5
    max_rounds: int = 1000
    warmup_rounds: int = 1
    probe_calls: int = 3         # the probe of each implementation's time: at least this many calls
    probe_seconds: float = 0.05  # and this long in all
    max_repeats: int = 1

    def plan(self, fns: dict[str, Callable[[], object]], timer=None) -> tuple[int, dict[str, int]]:
        if self.rounds is not None and self.max_repeats <= 1:
            return self.rounds, {n: 1 for n in fns}  # nothing to probe
        t = {n: per_call(fn, self.probe_calls, self.probe_seconds, timer) for n, fn in fns.items()}
        slowest = max(t.values())
        rounds = self.rounds or int(min(self.max_rounds, max(self.min_rounds, self.seconds / slowest)))
        repeats = {n: int(min(self.max_repeats, max(1, slowest / s if s > 0 else 1))) for n, s in t.items()}
        return rounds, repeats


def time_group(fns: dict[str, Callable[[], object]], budget: Budget, device: str = "cpu") -> GroupTiming:
    """Warm up and probe every implementation, then time them interleaved."""
    timer = timer_for(device)
    for _ in range(budget.warmup_rounds):
        for fn in fns.values():
            fn()
    rounds, repeats = budget.plan(fns, timer)
    return time_interleaved(fns, rounds, warmup_rounds=0, timer=timer, repeats=repeats)
