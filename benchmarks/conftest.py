"""pytest-benchmark setup for ktgfast's benchmarks (run by path; not in testpaths).

Thread count: ``KTGFAST_BENCH_THREADS`` or every core this process may use,
set once for the whole run so all implementations get the same threads.
"""
from __future__ import annotations

import hashlib
import os
import platform
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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pytest_benchmark_update_machine_info(config, machine_info):
    import ktgfast
    from ktgfast import ops

    build, so_sha = None, None
    if ops.extension_available():
        if hasattr(ops._C, "build_info"):
            build = ops._C.build_info()
        with open(ops._C.__file__, "rb") as f:  # which build was measured
            so_sha = hashlib.sha256(f.read()).hexdigest()[:16]
    machine_info["ktgfast"] = {
        "version": ktgfast.__version__,
        "build_info": build,
        "extension_sha256": so_sha,
        "device": "cpu",
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "torch_parallel_info": torch.__config__.parallel_info(),
        # Other work on the machine skews timings (OpenMP kernels most): keep an eye on it.
        "load_average_at_start": _LOAD_AT_START,
        "load_average_at_end": _loadavg(),
    }
