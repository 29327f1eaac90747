"""Machine info stored in every benchmark JSON (``machine_info["ktgfast"]``)."""
from __future__ import annotations

import hashlib
import os
import platform

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def loadavg():
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def cpu() -> tuple[str, list[str]]:
    """CPU model and the ISA flags that matter to the kernels and to bf16."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if model is None and line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), [f for f in ISA_FLAGS if f in flags]


def native_bf16(isa: list[str]) -> bool:
    return "avx512_bf16" in isa or "amx_bf16" in isa


def collect(device: str = "cpu") -> dict:
    import torch

    import ktgfast
    from ktgfast import ops

    from .timing import TIMERS

    build, so_sha = None, None
    if ops.extension_available():
        if hasattr(ops._C, "build_info"):
            build = ops._C.build_info()
        with open(ops._C.__file__, "rb") as f:  # which build was measured
            so_sha = hashlib.sha256(f.read()).hexdigest()[:16]
    model, isa = cpu()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "version": ktgfast.__version__,
        "build_info": build,
        "extension_sha256": so_sha,
        "device": device,
        "timer": TIMERS[device.split(":", 1)[0]].name,      # what the suites' clock was
        "memory": TIMERS[device.split(":", 1)[0]].memory,   # what the peak-memory column means
        "cpu_model": model,
        "isa": isa,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "gpu": gpu,
    }
