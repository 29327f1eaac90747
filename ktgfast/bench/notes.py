"""What a report says besides its tables: warnings on noise, and notes that
explain what was measured (the clock, memory) and why a bf16 row is as fast or
slow as it is."""
from __future__ import annotations

from .machine import native_bf16
from .suites import Suite

WIDE_IQR = 0.2  # IQR / median above which a row is flagged as noisy


def warnings_of(data: dict, groups) -> list[str]:
    """Load above the core count, wide IQRs, rows not timed interleaved."""
    k = (data.get("machine_info") or {}).get("ktgfast", {})
    out = []
    cores = k.get("usable_cores")
    loads = [x[0] for x in (k.get("load_average_at_start"), k.get("load_average_at_end")) if x]
    if cores and loads and max(loads) > cores:
        out.append(f"load average {max(loads):.2f} > {cores} cores: other work shared the CPU, ratios are noisy")
    for g, med in groups.items():
        for r in med.values():
            if r.median > 0 and r.iqr / r.median > WIDE_IQR:
                out.append(f"wide IQR in '{g}' / {r.impl}: {r.iqr / r.median:.0%} of the median")
        apart = sorted(r.impl for r in med.values() if not r.interleaved)
        if len(med) > 1 and apart:
            out.append(f"'{g}': {', '.join(apart)} not timed interleaved with the others (an older run?): "
                       "load may have hit the rows unequally")
    return out


def bf16_notes(suite: Suite, data: dict, groups) -> list[str]:
    """Why a bf16 row is as fast or slow as it is: on a CPU, native bf16
    (avx512_bf16 / AMX) or emulated; an explanation, never an error."""
    k = (data.get("machine_info") or {}).get("ktgfast", {})
    device, isa = str(k.get("device") or "cpu"), k.get("isa")
    out = []
    for impl in suite.bf16:
        present = [med for med in groups.values() if impl in med]
        if not present:
            continue
        ratios = [f"{med[impl].median / med[suite.ktgfast].median:.2f}×" for med in present
                  if suite.ktgfast in med and med[suite.ktgfast].median > 0]
        lab = suite.label(impl) or impl
        took = f"it took {', '.join(ratios) or '?'} the time of {suite.ktgfast_label}"
        if device.startswith("cuda"):
            out.append(f"{lab}: bf16 autocast on the GPU; {took}.")
        elif isa is None:
            out.append(f"{lab}: this run recorded no ISA flags, so whether its CPU has native bf16 is unknown; "
                       f"{took}.")
        elif native_bf16(isa):
            flags = ", ".join(f for f in isa if "bf16" in f)
            out.append(f"{lab}: this CPU has native bf16 ({flags}), so bf16 autocast runs bf16 kernels; {took}.")
        else:
            out.append(f"{lab}: this CPU has neither avx512_bf16 nor amx_bf16 (ISA flags: "
                       f"{', '.join(isa) or 'none'}), so bf16 is emulated (converted to fp32 around each op); "
                       f"{took}. Its speed against fp32 depends on the CPU's fp32 kernels (this project has "
                       "seen 1.6× faster to 15× slower): an explanation, not an error.")
    return out


def timing_notes(data: dict, groups) -> list[str]:
    """What the clock and the memory column measured (recorded by the run)."""
    k = (data.get("machine_info") or {}).get("ktgfast", {})
    rows = [r for med in groups.values() for r in med.values()]
    timer = k.get("timer")
    interleaved = rows and all(r.interleaved for r in rows)
    how = "interleaved (A B C, A B C, ... rotated each round)" if interleaved else "not all interleaved"
    env = k.get("bench_env") or {}
    budget = ", ".join(f"{n}={v}" for n, v in env.items() if n != "KTGFAST_BENCH_DEVICE") or "the defaults"
    out = [f"Timing: implementations of a group timed {how}; clock: {timer or 'not recorded by this run'}; "
           f"budget: {budget if env else 'not recorded by this run'}."]
    memory = k.get("memory")
    out.append(f"Memory: {memory or 'not recorded by this run'}.")
    return out
