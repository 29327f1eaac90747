"""The results table: ``<out>/results.csv``, one line per (row, seed, metric),
only ever appended to.  A line records our number, the paper's, where the
row's graph came from and the run folder, so a table can be rebuilt from it
alone.  A file whose header is not this one is refused, never rewritten.
"""
from __future__ import annotations

import csv
import math
import statistics
import time
from pathlib import Path

COLUMNS = ("time", "recipe", "row", "label", "seed", "metric", "ours", "paper", "paper_std", "wall_s",
           "graph_source", "graph", "method", "mode", "run_dir")
FILE = "results.csv"


class ResultsTable:
    def __init__(self, out: str | Path):
        self.path = Path(out) / FILE
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != COLUMNS:
                raise ValueError(f"{self.path}: its header {header} is not a ktgfast reproduce results "
                                 f"table ({', '.join(COLUMNS)}); choose another --out")

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def recorded(self, run_dir: str | Path) -> bool:
        """Whether the run in ``run_dir`` already has its lines."""
        run_dir = str(run_dir)
        return any(r["run_dir"] == run_dir for r in self.rows())

    def append(self, lines: list[dict]) -> None:
        """Append ``lines`` (dicts with the COLUMNS keys but ``time``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            for line in lines:
                w.writerow({"time": stamp, **{k: _cell(line.get(k)) for k in COLUMNS if k != "time"}})
            f.flush()


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return v


def summarize(lines: list[dict], recipe: str, mode: str) -> list[dict]:
    """Per (row, metric) of ``recipe``: our mean ± std over the seeds recorded
    and the paper's number, for the metrics the paper prints (all metrics of
    rows that print none)."""
    groups: dict[tuple[str, str], dict] = {}
    for r in lines:
        if r["recipe"] != recipe or r["mode"] != mode:
            continue
        papered = any(x["paper"] for x in lines if x["recipe"] == recipe and x["row"] == r["row"])
        if papered and not r["paper"]:
            continue
        g = groups.setdefault((r["row"], r["metric"]), {"row": r["row"], "label": r["label"],
                                                      "metric": r["metric"], "paper": r["paper"],
                                                      "paper_std": r["paper_std"], "seeds": {},
                                                      "graph_source": r["graph_source"]})
        g["seeds"][r["seed"]] = float(r["ours"])  # a later line of a seed replaces an earlier one
    out = []
    for g in groups.values():
        vals = list(g.pop("seeds").values())
        g["n"] = len(vals)
        g["mean"] = statistics.fmean(vals)
        g["std"] = statistics.stdev(vals) if len(vals) > 1 else math.nan
        out.append(g)
    return out


def format_summary(groups: list[dict]) -> str:
    lines = [f"{'row':<28} {'metric':<22} {'ours':>16} {'paper':>16}  graph"]
    for g in groups:
        ours = f"{g['mean']:.2f}" + (f" ± {g['std']:.2f}" if not math.isnan(g["std"]) else "") + f" (n={g['n']})"
        paper = (f"{float(g['paper']):.2f}" + (f" ± {float(g['paper_std']):.2f}" if g["paper_std"] else "")
                 if g["paper"] else "-")
        lines.append(f"{g['row']:<28} {g['metric']:<22} {ours:>16} {paper:>16}  {g['graph_source']}")
    return "\n".join(lines)


__all__ = ["COLUMNS", "FILE", "ResultsTable", "format_summary", "summarize"]
