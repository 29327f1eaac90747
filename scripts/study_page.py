"""The evidence page of scripts/study.py: docs/results.md and results.png,
written from ``results.csv`` alone (statistics: study_stats.py).

The page gets the study's table through a :class:`PageSpec`: the
comparisons, the hand-written readings and the texts that head the page.
"""
from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import study_stats as st
from study_runner import read_results

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PageSpec:
    comparisons: list                       # the study's Comparison table, in page order
    canonical: str                          # the command that runs (or resumes) the whole study
    budget_note: str                        # why this budget
    multi_arm: set = field(default_factory=set)   # jobs scoring several arms (wall split between them)
    readings: dict = field(default_factory=dict)  # comparison -> what its ablations say (by hand)
    read_for: str = ""                      # sha256 prefix of the results.csv the readings were read from


def machine() -> dict:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ktgfast", "scripts"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "commit": commit + (" (with uncommitted changes in ktgfast/ or scripts/)" if dirty else "")}


def fmt(m: float, s: float) -> str:
    return f"{m:.2f} ± {s:.2f}"


def table_rows(rows: list[dict], comp) -> list[dict]:
    """One entry per claimed pair: arm stats over its seeds, the paired difference."""
    by_arm: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["comparison"] == comp.name:
            by_arm.setdefault(r["arm"], {})[r["seed"]] = r["test"]
    out = []
    for better, other in comp.pairs:
        a, b = by_arm.get(better, {}), by_arm.get(other, {})
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        p = st.paired_ci([a[s] for s in seeds], [b[s] for s in seeds])
        out.append({"better": better, "other": other, "n": len(seeds), "a": st.mean_std(list(a.values())),
                    "b": st.mean_std(list(b.values())), "na": len(a), "nb": len(b), "paired": p})
    return out


def wall_minutes(rows: list[dict], comparison: str, multi_arm: set) -> float:
    """Wall time of the runs a comparison trained: a (run, seed, budget) counts
    in the comparison that first recorded it."""
    first: dict[tuple, str] = {}
    for r in rows:
        first.setdefault((r["run"], r["seed"], r["budget"], r["arm"] if r["run"] in multi_arm else ""),
                         r["comparison"])
    return sum(r["wall_s"] for r in rows if r["comparison"] == comparison and first[
        (r["run"], r["seed"], r["budget"], r["arm"] if r["run"] in multi_arm else "")] == comparison) / 60


def ablation_lines(rows: list[dict], comparisons: list) -> list[str]:
    """For every measured claim whose interval is not above 0: the ablation rows
    run for it (their Δ and verdict), or that none was run."""
    out = []
    for comp in comparisons:
        if comp.ablation_of:
            continue
        weak = [e for e in table_rows(rows, comp) if e["paired"].verdict != st.HOLDS]
        if not weak:
            continue
        claims = "; ".join(f"{e['better']} − {e['other']}: {e['paired'].mean:+.2f} pp ({e['paired'].verdict})"
                           for e in weak)
        abl = [(a, e) for a in comparisons if a.ablation_of == comp.name for e in table_rows(rows, a)]
        if abl:
            found = "; ".join(f"{a.name} ({a.claim}): {e['better']} − {e['other']} {e['paired'].mean:+.2f} pp, "
                              f"95 % CI [{e['paired'].low:+.2f}, {e['paired'].high:+.2f}], {e['paired'].verdict}"
                              for a, e in abl)
            out.append(f"* **{comp.name}** — {claims}. Ablation: {found}.")
        else:
            out.append(f"* **{comp.name}** — {claims}. No ablation was run for this row in this study.")
    return out or ["Every measured claim holds."]


def reading_lines(csv_path: Path, readings: dict, read_for: str) -> list[str]:
    if not readings:
        return []
    import hashlib
    sha = hashlib.sha256(csv_path.read_bytes()).hexdigest() if csv_path.exists() else ""
    head = (f"Read by hand from the results.csv above (sha256 `{read_for}`...)." if sha.startswith(read_for)
            else f"**Written for an earlier results.csv** (sha256 `{read_for}`...; this one is `{sha[:12]}`...): "
                 "check each statement against the table before trusting it.")
    return ["## What the ablations say", "", head, ""] + [f"* **{k}** — {v}" for k, v in readings.items()] + [""]


def invocations(status: dict, command: str) -> list[tuple[str, str]]:
    """(command, elapsed) per invocation; invocations before elapsed times were
    recorded say so."""
    cmds = status.get("_invocations", [command])
    elapsed = status.get("_elapsed_min", [])
    elapsed = [None] * (len(cmds) - len(elapsed)) + elapsed
    commits = status.get("_commits", [])
    commits = [None] * (len(cmds) - len(commits)) + commits
    return [(c, ("elapsed not recorded" if e is None else f"{e:g} min")
             + ("" if k is None else f", commit {k}")) for c, e, k in zip(cmds, elapsed, commits)]


def write_page(spec: PageSpec, csv_path: Path, page: Path, plot: Path, command: str, status: dict, info: dict,
               epochs: int, ssl_iterations: int) -> None:
    rows = read_results(csv_path)
    lines = ["# Evidence: each method against its baseline on MNIST-5k", "",
             "Written by `scripts/study.py` from its `results.csv`; do not edit by hand.", "",
             f"* command (runs, or resumes, the whole study): `{spec.canonical}`",
             "* invocations that wrote this results.csv (in order, with their elapsed time): "
             + "; ".join(f"`{c}` ({e})" for c, e in invocations(status, command)),
             f"* elapsed: {sum(status.get('_elapsed_min', [])):.1f} min over the invocations that recorded it, "
             f"{len(status.get('_elapsed_min', []))} of {len(status.get('_invocations', [command]))}",
             f"* wall time summed over runs: {sum(r['wall_s'] for r in rows) / 60:.1f} min "
             "(with `--jobs 2` two runs share the 2 cores, so each takes longer than alone and the "
             "elapsed time is about half this sum)",
             f"* commit that wrote this page: `{info['commit']}` (each invocation's is beside it above)",
             f"* machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
             f"Python {info['python']}, 1 intra-op thread per run, CPU shared with other jobs",
             f"* budget: {epochs} epochs (cosine schedule of the mnist5k recipe) for the supervised rows; "
             f"{ssl_iterations} iterations for the semi-supervised row",
             f"* why {epochs} epochs: {spec.budget_note}",
             "* score: **test** accuracy (%) of the epoch / evaluation period / generation with the best "
             "**validation** accuracy (first on ties); test selects nothing. Validation: 500 images carved "
             "from training; test: the 1,000 test images.",
             "* Δ: paired difference (paper's better arm − other) over the seeds both arms finished, "
             "mean and 95 % Student-t interval; verdict: **holds** (interval above 0), **reversed** "
             "(below 0), **not resolved** (contains 0).", "",
             "| comparison | paper's claim | arm A (paper: better) | test % A | arm B | test % B | seeds | "
             "Δ A − B (pp) | 95 % CI | verdict | wall (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    plotted, not_run = [], []
    status = {k: v for k, v in status.items() if not k.startswith("_")}
    for comp in spec.comparisons:
        entries = table_rows(rows, comp)
        wall = wall_minutes(rows, comp.name, spec.multi_arm)
        state = status.get(comp.name, "not selected with --rows by any invocation on this results.csv")
        if not entries:
            not_run.append(f"* **{comp.name}** ({comp.claim}): not run; {state}")
            continue
        for e in entries:
            p = e["paired"]
            ci = "n/a (one pair)" if p.n < 2 else f"[{p.low:+.2f}, {p.high:+.2f}]"
            lines.append(f"| {comp.name} | {comp.claim} | {e['better']} | {fmt(*e['a'])} | {e['other']} | "
                         f"{fmt(*e['b'])} | {e['n']} | {p.mean:+.2f} | {ci} | {p.verdict} | {wall:.1f} |")
            plotted.append((f"{comp.name}: {e['better']} − {e['other']}", p))
        if state != "done":
            not_run.append(f"* **{comp.name}** is partial: {state}")
    lines += ["", "Wall time per comparison is the sum of its runs' wall time (a run shared with an "
              "earlier comparison, e.g. DML as `no mixup`, is trained once and counted there).", ""]
    for comp in spec.comparisons:
        if comp.source or comp.notes:
            lines.append(f"* {comp.name}: {comp.source}" + (f"; {comp.notes}" if comp.notes else ""))
    lines += ["", "![paired differences](results.png)", "", "## Rows that do not hold, and their ablations", ""]
    lines += ablation_lines(rows, spec.comparisons)
    lines += [""] + reading_lines(csv_path, spec.readings, spec.read_for)
    if not_run:
        lines += ["## Not run or partial", ""] + not_run + [""]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + "\n")
    draw(plotted, plot)


def draw(plotted: list, path: Path) -> None:
    import math

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9.5, 0.45 * max(len(plotted), 2) + 1.2))
    for i, (label, p) in enumerate(reversed(plotted)):
        err = None if math.isnan(p.low) else [[p.mean - p.low], [p.high - p.mean]]
        color = {"holds": "tab:green", "reversed": "tab:red"}.get(p.verdict, "tab:gray")
        ax.errorbar(p.mean, i, xerr=err, fmt="o", color=color, capsize=3)
    ax.set_yticks(range(len(plotted)), [lab for lab, _ in reversed(plotted)], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("paired test-accuracy difference A − B (pp), 95 % t CI")
    ax.set_title("MNIST-5k: green holds, red reversed, grey not resolved", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["PageSpec", "ablation_lines", "machine", "table_rows", "write_page"]
