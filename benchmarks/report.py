"""Ratios of a pytest-benchmark JSON: each implementation's median divided by
ktgfast's median in the same group (> 1 means ktgfast is faster).

    python benchmarks/report.py benchmarks/results/cpu_gated_edge_loss.json

Prints a Markdown table (paste it into benchmarks/README.md) and the issue's
goals for the CPU op at M=4, C=100.  ``--check`` exits 1 when a goal is missed.
"""
from __future__ import annotations

import argparse
import json
import sys

KTG = "ktgfast"
REFS = ["per_edge_loop", "reference", "reference_compiled"]
LABELS = {"per_edge_loop": "(a) per-edge loop", "reference": "(b) reference",
          "reference_compiled": "(c) compiled ref", KTG: "(d) ktgfast"}
# (group, reference, minimum ratio) from the issue.
GOALS = [("full M=4 C=100", "per_edge_loop", 10.0), ("full M=4 C=100", "reference_compiled", 1.5)]


def _impl(bench: dict) -> str:
    impl = bench.get("extra_info", {}).get("impl")
    if impl:
        return impl
    return bench["name"].rsplit("-", 1)[-1].rstrip("]")  # ...[full-M4-C100-ktgfast]


def load(path: str) -> tuple[dict, dict[str, dict[str, float]]]:
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, dict[str, float]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"] or "", {})[_impl(b)] = b["stats"]["median"]
    return data, groups


def fmt_ms(s: float | None) -> str:
    if s is None:
        return "–"
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def table(groups: dict[str, dict[str, float]]) -> str:
    head = ["group"] + [f"{LABELS[i]} ms" for i in REFS + [KTG]] + [f"{LABELS[r][:3]}/(d)" for r in REFS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g, med in groups.items():
        k = med.get(KTG)
        ratios = [f"{med[r] / k:.2f}×" if k and r in med else "–" for r in REFS]
        cells = [g] + [fmt_ms(med.get(i)) for i in REFS + [KTG]] + ratios
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine(data: dict) -> str:
    mi = data.get("machine_info", {})
    k = mi.get("ktgfast", {})
    build = k.get("build_info") or {}
    return (f"{k.get('cpu_model', mi.get('processor', '?'))}, {k.get('usable_cores', '?')} cores, "
            f"{k.get('torch_threads', '?')} torch threads, torch {k.get('torch_version', '?')}, "
            f"ktgfast {k.get('version', '?')} ({build.get('compiler', '?')}, "
            f"openmp={build.get('openmp', '?')}), device {k.get('device', '?')}; "
            f"load average at start {k.get('load_average_at_start')}, end {k.get('load_average_at_end')}; "
            f"{data.get('datetime', '')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="file written by pytest --benchmark-json=...")
    ap.add_argument("--check", action="store_true", help="exit 1 if an issue goal is missed")
    args = ap.parse_args(argv)
    data, groups = load(args.json)
    print(f"Machine: {machine(data)}\n")
    print("Medians; ratio = reference median / ktgfast median (> 1: ktgfast faster).\n")
    print(table(groups))
    print()
    missed = False
    for g, ref, goal in GOALS:
        med = groups.get(g, {})
        if KTG not in med or ref not in med:
            print(f"- goal {g}: {LABELS[ref]} / ktgfast >= {goal}×: not measured")
            continue
        r = med[ref] / med[KTG]
        ok = r >= goal
        missed |= not ok
        print(f"- goal {g}: {LABELS[ref]} / ktgfast = {r:.2f}× (goal >= {goal}×): {'met' if ok else 'MISSED'}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
