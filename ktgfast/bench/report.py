"""The report of one suite's pytest-benchmark JSON: per group every
implementation's median and IQR (and peak memory where the run measured it),
the ratio reference / ktgfast (> 1: ktgfast faster), the suite's goals met or
missed, notes (what was timed, bf16) and warnings on noise (``notes.py``)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from .notes import bf16_notes, timing_notes, warnings_of
from .suites import Suite

@dataclass
class Row:
    group: str
    impl: str
    median: float
    iqr: float
    rounds: int
    peak_bytes: int | None = None  # peak memory of a call, where the timer measured it
    interleaved: bool = False


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
    notes: list[str] = field(default_factory=list)  # explanations (bf16), not warnings

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
        st, extra = b["stats"], b.get("extra_info") or {}
        r = Row(b.get("group") or "", impl_of(b), st["median"], st.get("iqr", 0.0), st.get("rounds", 0),
                extra.get("peak_memory_bytes"), bool(extra.get("interleaved")))
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
            f"{k.get('torch_threads', '?')} torch thread{'' if k.get('torch_threads') == 1 else 's'}, torch {k.get('torch_version', '?')}{gpu}, "
            f"ktgfast {k.get('version', '?')} ({build.get('compiler', '?')}, openmp={build.get('openmp', '?')}), "
            f"device {k.get('device', '?')}; load average {k.get('load_average_at_start')} -> "
            f"{k.get('load_average_at_end')}; {data.get('datetime', '')}")


def _mib(b: int | None) -> str:
    return "–" if b is None else f"{b / 2**20:.1f}"


def report_suite(suite: Suite, data: dict, old: dict | None = None, markdown: bool = False) -> SuiteReport:
    groups = rows_of(data)
    old_groups = rows_of(old) if old else {}
    about = timing_notes(data, groups)
    if markdown:  # one paragraph each
        about = [x for line in about for x in (line, "")][:-1]
    with_memory = any(r.peak_bytes is not None for med in groups.values() for r in med.values())
    lines = [f"### {suite.title} (`{suite.name}`)" if markdown else f"== {suite.title} ({suite.name}) ==",
             "", f"Machine: {machine_line(data)}", "", *about, "",
             "Median and IQR per implementation; ratio = its median / ktgfast's (> 1: ktgfast faster).", ""]
    unrecognised = []
    for g, med in groups.items():
        k = med.get(suite.ktgfast)
        head = ["implementation", "median ms", "IQR ms", "rounds", "ratio to ktgfast"]
        if with_memory:
            head.append("peak MiB")
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
            if with_memory:
                cells.append(_mib(r.peak_bytes))
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
    notes = bf16_notes(suite, data, groups)
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    warns = warnings_of(data, groups)
    if unrecognised:
        warns.append(f"rows not declared in {suite.path.name}'s SUITE: {', '.join(unrecognised)}")
    if warns:
        lines += ["", "Warnings:"] + [f"- {w}" for w in warns]
    return SuiteReport(suite, "\n".join(lines) + "\n", goals, unrecognised, warns, notes)
