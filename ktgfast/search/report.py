"""What a search leaves behind: a leaderboard (CSV + table), the best graph
(YAML + picture), everyone's learning curves (pruned trials marked, like the
thesis's fig. 3.10), the :class:`StudyResult` summary, and the tables of
``ktgfast search status``.

This module reads a finished or running study and knows nothing of how trials
are run (``study.py`` imports it, never the other way round)."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..graph import Graph, render, save_graph
from ..train.checkpoint import atomic_write_text


@dataclass
class StudyResult:
    """The summary of a study that ``search`` returns."""

    study_name: str
    study_dir: Path
    best_number: int | None
    best_score: float | None
    best_graph: object | None
    trials: int
    complete: int
    pruned: int
    failed: int
    rejected: int
    duplicates: int
    wall_s: float = 0.0
    retrain: dict | None = None
    ran: int | None = None  # trials added while this command ran (a study may be resumed or shared)


def score(t: optuna.trial.FrozenTrial) -> float | None:
    """Accuracy at the last epoch reached (completed or pruned).  A failed
    trial (its worker died; it is retried) or one still running has no score,
    so a half-finished trial is never the best graph."""
    if t.state == TrialState.COMPLETE:
        return t.value
    if t.state == TrialState.PRUNED and t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def _models(t) -> str:
    g = t.user_attrs.get("graph")
    return ",".join(f"ema({n['ema_of']})" if n.get("ema_of") else n["model"] for n in g["nodes"]) if g else ""


def _gates(t) -> str:
    g = t.user_attrs.get("graph")
    if not g:
        return ""

    def gate(e):
        x = e.get("gate", "through")
        if isinstance(x, dict) and x.get("kind") == "threshold":
            x = f"threshold({x.get('tau', 0.95):.2f})"
        elif not isinstance(x, str):
            x = f"sine({x.get('f', 0):.2f},{x.get('phi', 0):.2f})"
        searched = g.get("semi_supervised") or any(n.get("model") == "ensemble" for n in g["nodes"])
        if searched and e["src"] != "label" and x != "cutoff":  # losses are searched there
            x += f"/{e.get('loss', 'kl')}"
        return x

    return " ".join(f"{e['src']}>{e['dst']}:{gate(e)}" for e in g["edges"])


def leaderboard(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        s = score(t)
        rows.append({
            "number": t.number, "state": t.state.name,
            "score": None if s is None else round(s, 4),
            "epochs": max(t.intermediate_values) if t.intermediate_values else 0,
            "stopped_at": t.user_attrs.get("stopped_at", ""),
            "duplicate_of": t.user_attrs.get("duplicate_of", ""),
            "rejected": t.user_attrs.get("rejected", ""), "error": t.user_attrs.get("error", ""),
            "graph_key": t.user_attrs.get("graph_key", ""), "models": _models(t), "gates": _gates(t),
            "duration_s": round(t.duration.total_seconds(), 2) if t.duration else "",
        })
    rows.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0), r["number"]))
    return rows


def summary(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    count = lambda st: sum(t.state == st for t in trials)
    return {
        "trials": len(trials), "complete": count(TrialState.COMPLETE),
        "pruned": sum(t.state == TrialState.PRUNED and "rejected" not in t.user_attrs for t in trials),
        "rejected": sum("rejected" in t.user_attrs for t in trials),
        "failed": count(TrialState.FAIL), "running": count(TrialState.RUNNING),
        "duplicates": sum("duplicate_of" in t.user_attrs for t in trials),
    }


def format_table(rows: list[dict], top: int = 10) -> str:
    head = f"{'#':>5} {'state':<8} {'score':>7} {'epochs':>6}  models / gates"
    lines = [head, "-" * len(head)]
    for r in rows[:top]:
        sc = "-" if r["score"] is None else f"{r['score']:.2f}"
        lines.append(f"{r['number']:>5} {r['state']:<8} {sc:>7} {r['epochs']:>6}  "
                     f"{r['models']}  {r['gates']}")
    return "\n".join(lines)


def curves_figure(study: optuna.Study):
    """Every trial's target validation accuracy per epoch (a matplotlib Figure):
    pruned trials grey with a cross where they stopped, the best in orange,
    ASHA's rungs dotted.  A trial of one evaluation is a marker, so a study of
    1-epoch trials still shows every trial."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    best = max((t for t in trials if score(t) is not None), key=score, default=None)
    for t in trials:
        steps = sorted(t.intermediate_values)
        vals = [t.intermediate_values[s] for s in steps]
        pruned = t.state == TrialState.PRUNED
        ax.plot(steps, vals, color="tab:gray" if pruned else "tab:blue", alpha=0.45 if pruned else 0.8,
                lw=0.8 if pruned else 1.3, marker="o" if len(steps) == 1 else None, ms=4)
        if pruned:
            ax.plot(steps[-1], vals[-1], "x", color="tab:red", ms=6)
    if best is not None:
        steps = sorted(best.intermediate_values)
        ax.plot(steps, [best.intermediate_values[s] for s in steps], color="tab:orange", lw=2.5,
                marker="o" if len(steps) == 1 else None, ms=7, label=f"best: trial {best.number}")
    top = max([max(t.intermediate_values) for t in trials] or [1])
    rung = 1
    while rung <= top:
        ax.axvline(rung, color="k", lw=0.5, ls=":")
        rung *= 2
    ax.plot([], [], "x", color="tab:red", label="pruned (stopped here)")
    from matplotlib.ticker import FixedLocator, ScalarFormatter

    ax.set_xscale("log", base=2)
    ax.set_xlim(0.8, top * 1.25)  # one epoch alone is not a degenerate axis
    ax.xaxis.set_major_locator(FixedLocator([2 ** k for k in range(int(top).bit_length())]))
    ax.xaxis.set_major_formatter(ScalarFormatter())  # epochs 1, 2, 4, ... not 2^k
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_xlabel("epoch (ASHA rungs dotted)")
    ax.set_ylabel("target validation accuracy (%)")
    ax.set_title(f"{study.study_name}: learning curves of all trials")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_curves(study: optuna.Study, path: Path) -> Path:
    curves_figure(study).savefig(path)
    return path


def write_outputs(study: optuna.Study, settings) -> StudyResult:
    """Write the leaderboard, best graph and curves of ``study`` into
    ``settings.study_dir()`` (``settings``: a ``SearchSettings``)."""
    out = settings.study_dir()
    out.mkdir(parents=True, exist_ok=True)
    rows = leaderboard(study)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["number"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(buf.getvalue(), out / "leaderboard.csv")
    s = summary(study)
    best_row = next((r for r in rows if r["score"] is not None), None)
    best_graph = None
    if best_row is not None:
        trial = study.trials[best_row["number"]]
        best_graph = Graph.from_dict(trial.user_attrs["graph"])
        best_graph.name = f"{settings.study_name()}-best"
        save_graph(best_graph, out / "best_graph.yaml")
        render(best_graph, out / "best_graph.png")
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plot_curves(study, out / "curves.png")
    print(format_table(rows), flush=True)
    print(f"{s['trials']} trials: {s['complete']} complete, {s['pruned']} pruned, {s['failed']} failed, "
          f"{s['rejected']} rejected, {s['duplicates']} duplicates; outputs in {out}", flush=True)
    return StudyResult(
        study_name=settings.study_name(), study_dir=out,
        best_number=None if best_row is None else best_row["number"],
        best_score=None if best_row is None else best_row["score"], best_graph=best_graph,
        trials=s["trials"], complete=s["complete"], pruned=s["pruned"], failed=s["failed"],
        rejected=s["rejected"], duplicates=s["duplicates"])
