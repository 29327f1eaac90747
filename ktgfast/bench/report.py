"""The report of one suite's pytest-benchmark JSON: per group every
implementation's median and IQR, the ratio reference / ktgfast (> 1: ktgfast
faster), the suite's goals met or missed, and warnings on noise."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from .machine import native_bf16
from .suites import Suite

WIDE_IQR = 0.2  # IQR / median above which a row is flagged as noisy


@dataclass
class Row:
    group: str
    impl: str
    median: float
    iqr: float
    rounds: int


@dataclass
class GoalResult:
    group: str
    ref: str
    minimum: float
    ratio: float | None  # None: not measured

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= self.minimum


@dataclass
class SuiteReport:
    suite: Suite
    text: str
    goals: list[GoalResult] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def missed(self) -> bool:
        return any(g.met is False for g in self.goals)


def load(path) -> dict:
    with open(path) as f:
        return json.load(f)


def impl_of(bench: dict) -> str:
    impl = (bench.get("extra_info") or {}).get("impl")
    if impl:
        return impl
    name = bench["name"]
    return name.rsplit("-", 1)[-1].rstrip("]") if "[" in name else name


def rows_of(data: dict) -> dict[str, dict[str, Row]]:
    groups: dict[str, dict[str, Row]] = {}
    for b in data.get("benchmarks", []):
        st = b["stats"]
        r = Row(b.get("group") or "", impl_of(b), st["median"], st.get("iqr", 0.0), st.get("rounds", 0))
        groups.setdefault(r.group, {})[r.impl] = r
    return groups


def ordered_impls(suite: Suite, med: dict[str, Row]) -> list[str]:
    known = [*suite.references, *suite.variants, suite.ktgfast]
    return [i for i in known if i in med] + sorted(i for i in med if i not in known)


def evaluate_goals(suite: Suite, groups: dict[str, dict[str, Row]]) -> list[GoalResult]:
    out = []
    for g in suite.goals:
        matched = [name for name in groups if fnmatchcase(name, g["group"])] or [g["group"]]
        for name in matched:
            med = groups.get(name, {})
            k, r = med.get(suite.ktgfast), med.get(g["ref"])
            ratio = r.median / k.median if (k and r and k.median > 0) else None
            out.append(GoalResult(name, g["ref"], float(g["min"]), ratio))
    return out


def _ms(s: float | None) -> str:
    if s is None:
        return "–"
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def machine_line(data: dict) -> str:
    k = (data.get("machine_info") or {}).get("ktgfast", {})
    build = k.get("build_info") or {}
    isa = ",".join(k.get("isa") or []) or "none of avx2/avx512f/avx512_bf16/amx"
    gpu = f", GPU {k['gpu']} (CUDA {k.get('cuda_version')})" if k.get("gpu") else ""
    return (f"{k.get('cpu_model', '?')} [{isa}], {k.get('usable_cores', '?')} cores, "
            f"{k.get('torch_threads', '?')} torch threads, torch {k.get('torch_version', '?')}{gpu}, "
            f"ktgfast {k.get('version', '?')} ({build.get('compiler', '?')}, openmp={build.get('openmp', '?')}), "
            f"device {k.get('device', '?')}; load average {k.get('load_average_at_start')} -> "
            f"{k.get('load_average_at_end')}; {data.get('datetime', '')}")


def _warnings(suite: Suite, data: dict, groups) -> list[str]:
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
    present = {i for med in groups.values() for i in med}
    isa = k.get("isa")
    for impl in suite.bf16:
        if impl in present and isa is not None and not native_bf16(isa):
            out.append(f"{impl}: this CPU has neither avx512_bf16 nor AMX, so bf16 is emulated "
                       "(converted to fp32 around each op): its speed against fp32 depends on the CPU's fp32 kernels "
                       "(this project has seen 1.6x faster to 15x slower); not an error")
    return out


def report_suite(suite: Suite, data: dict, old: dict | None = None, markdown: bool = False) -> SuiteReport:
    groups = rows_of(data)
    old_groups = rows_of(old) if old else {}
    lines = [f"## {suite.title} ({suite.name})" if markdown else f"== {suite.title} ({suite.name}) ==",
             "", f"Machine: {machine_line(data)}", "",
             "Median and IQR per implementation; ratio = its median / ktgfast's (> 1: ktgfast faster).", ""]
    unrecognised = []
    for g, med in groups.items():
        k = med.get(suite.ktgfast)
        head = ["implementation", "median ms", "IQR ms", "rounds", "ratio to ktgfast"]
        if old:
            head.append("vs baseline")
        body = []
        for impl in ordered_impls(suite, med):
            r = med[impl]
            label = suite.label(impl)
            if label is None:
                unrecognised.append(impl)
                label = f"{impl} (not declared in SUITE)"
            ratio = f"{r.median / k.median:.2f}×" if k and k.median > 0 else "–"
            cells = [label, _ms(r.median), _ms(r.iqr), str(r.rounds), ratio]
            if old:
                o = old_groups.get(g, {}).get(impl)
                cells.append(f"{(r.median / o.median - 1) * 100:+.1f}%" if o and o.median > 0 else "new")
            body.append(cells)
        if markdown:
            lines += [f"**{g}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(c) + " |" for c in body]
        else:
            widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
            lines.append(f"[{g}]")
            for c in [head, *body]:
                lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
        lines.append("")
    goals = evaluate_goals(suite, groups)
    if goals:
        lines.append("Goals:")
    elif not suite.goals:
        lines.append("Goals: none declared for this suite.")
    for gr in goals:
        lab = suite.label(gr.ref) or gr.ref
        if gr.ratio is None:
            lines.append(f"- {gr.group}: {lab} / ktgfast >= {gr.minimum}×: not measured")
        else:
            lines.append(f"- {gr.group}: {lab} / ktgfast = {gr.ratio:.2f}× (goal >= {gr.minimum}×): "
                         f"{'met' if gr.met else 'MISSED'}")
    warns = _warnings(suite, data, groups)
    if unrecognised:
        warns.append(f"rows not declared in {suite.path.name}'s SUITE: {', '.join(unrecognised)}")
    if warns:
        lines += ["", "Warnings:"] + [f"- {w}" for w in warns]
    return SuiteReport(suite, "\n".join(lines) + "\n", goals, unrecognised, warns)
