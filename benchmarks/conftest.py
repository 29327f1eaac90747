"""pytest-benchmark setup for ktgfast's benchmarks (run by path; not in testpaths).

Thread count: ``KTGFAST_BENCH_THREADS`` or every core this process may use,
set once for the whole run so all implementations get the same threads.
"""
from __future__ import annotations

import os
import sys

import torch

from ktgfast.bench.machine import collect, loadavg, usable_cores

sys.path.insert(0, os.path.dirname(__file__))  # per_edge_loop, regardless of import mode

BENCH_THREADS = int(os.environ.get("KTGFAST_BENCH_THREADS", usable_cores()))
_LOAD_AT_START = None


def pytest_configure(config):
    global _LOAD_AT_START
    torch.set_num_threads(BENCH_THREADS)
    _LOAD_AT_START = loadavg()


def pytest_benchmark_update_machine_info(config, machine_info):
    info = collect(os.environ.get("KTGFAST_BENCH_DEVICE", "cpu"))
    # Other work on the machine skews timings (OpenMP kernels most): keep an eye on it.
    info["load_average_at_start"] = _LOAD_AT_START
    info["load_average_at_end"] = loadavg()
    info["torch_parallel_info"] = torch.__config__.parallel_info()
    # the budget this run had (--quick sets some): a smoke run must not pass for a full one
    info["bench_env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("KTGFAST_BENCH_")}
    machine_info["ktgfast"] = info
