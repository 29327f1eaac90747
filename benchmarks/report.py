"""Ratios of a pytest-benchmark JSON: each implementation's median divided by
ktgfast's median in the same group (> 1 means ktgfast is faster).

    python benchmarks/report.py benchmarks/results/cpu_gated_edge_loss.json
    python benchmarks/report.py benchmarks/results/cpu_attention_crop.json

Prints a Markdown table (paste it into benchmarks/README.md) and the issue's
goals of the op measured (gated_edge_loss at M=4, C=100; attention_crop_loss
at M=4).  ``--check`` exits 1 when a goal is missed.
"""
from __future__ import annotations

import argparse
import json
import sys

KTG = "ktgfast"
# Every reference implementation a benchmark may hold, in table order; a file's
# own references are lettered (a), (b), ... in this order and ktgfast last.
KNOWN_REFS = ["per_edge_loop", "per_sample_loop", "reference", "vectorised", "reference_compiled"]
NAMES = {"per_edge_loop": "per-edge loop", "per_sample_loop": "per-sample loop",
         "reference": "reference", "vectorised": "vectorised", "reference_compiled": "compiled ref",
         KTG: "ktgfast"}
# (group, reference, minimum ratio) from the issues.
GOALS = [("full M=4 C=100", "per_edge_loop", 10.0), ("full M=4 C=100", "reference_compiled", 1.5),
         ("abn16 mixed M=4", "per_sample_loop", 10.0), ("abn16 mixed M=4", "vectorised", 2.0),
         ("resnet8 mixed M=4", "per_sample_loop", 10.0), ("resnet8 mixed M=4", "vectorised", 2.0)]


DEFAULT_REFS = ["per_edge_loop", "reference", "reference_compiled"]  # gated_edge_loss's


def refs_of(groups: dict[str, dict[str, float]]) -> list[str]:
    """The reference implementations present in a file, in table order (the
    gated edge-loss benchmark's when the file holds none of them)."""
    present = {i for med in groups.values() for i in med}
    return [r for r in KNOWN_REFS if r in present] or DEFAULT_REFS


def labels_for(refs: list[str]) -> dict[str, str]:
    """"(a) per-edge loop", ... for the file's references, then ktgfast."""
    order = refs + [KTG]
    return {impl: f"({chr(ord('a') + i)}) {NAMES[impl]}" for i, impl in enumerate(order)}


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
    refs = refs_of(groups)
    labels = labels_for(refs)
    head = (["group"] + [f"{labels[i]} ms" for i in refs + [KTG]]
            + [f"{labels[r][:3]}/{labels[KTG][:3]}" for r in refs])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g, med in groups.items():
        k = med.get(KTG)
        ratios = [f"{med[r] / k:.2f}×" if k and r in med else "–" for r in refs]
        cells = [g] + [fmt_ms(med.get(i)) for i in refs + [KTG]] + ratios
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
    refs = refs_of(groups)
    labels = labels_for(refs)
    for g, ref, goal in GOALS:
        if ref not in refs:  # a goal of another benchmark
            continue
        med = groups.get(g, {})
        if KTG not in med or ref not in med:
            print(f"- goal {g}: {labels[ref]} / ktgfast >= {goal}×: not measured")
            continue
        r = med[ref] / med[KTG]
        ok = r >= goal
        missed |= not ok
        print(f"- goal {g}: {labels[ref]} / ktgfast = {r:.2f}× (goal >= {goal}×): {'met' if ok else 'MISSED'}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
