"""pytest-benchmark setup for ktgfast's benchmarks (run by path; not in testpaths).

Thread count: ``KTGFAST_BENCH_THREADS`` or every core this process may use,
set once for the whole run so all implementations get the same threads.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))  # per_edge_loop, regardless of import mode


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


BENCH_THREADS = int(os.environ.get("KTGFAST_BENCH_THREADS", _usable_cores()))


_LOAD_AT_START = None


def _loadavg():
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def pytest_configure(config):
    global _LOAD_AT_START
    torch.set_num_threads(BENCH_THREADS)
    _LOAD_AT_START = _loadavg()


def pytest_benchmark_update_machine_info(config, machine_info):
    from ktgfast.bench.machine import collect

    info = collect(os.environ.get("KTGFAST_BENCH_DEVICE", "cpu"))
    # Other work on the machine skews timings (OpenMP kernels most): keep an eye on it.
    info["load_average_at_start"] = _LOAD_AT_START
    info["load_average_at_end"] = _loadavg()
    info["torch_parallel_info"] = torch.__config__.parallel_info()
    machine_info["ktgfast"] = info
