"""Ratio bars of one suite's run (reference / ktgfast per group) with each
goal drawn as a line; saved next to the JSON.  Needs matplotlib."""
from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

from .report import rows_of
from .suites import Suite


def plot_ratios(suite: Suite, data: dict, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no picture")
        return None
    groups = rows_of(data)
    refs = [*suite.references, *suite.variants]
    fig, axes = plt.subplots(len(groups), 1, figsize=(7, 1.2 + 0.45 * len(refs) * max(1, len(groups))),
                             squeeze=False)
    for ax, (g, med) in zip(axes[:, 0], groups.items()):
        k = med.get(suite.ktgfast)
        names = [r for r in refs if r in med and k]
        ratios = [med[r].median / k.median for r in names]
        ax.barh([suite.label(r) for r in names], ratios, color="tab:blue")
        ax.axvline(1.0, color="grey", lw=0.8)
        for goal in suite.goals:
            if fnmatchcase(g, goal["group"]) and goal["ref"] in names:
                y = names.index(goal["ref"])
                ax.plot([goal["min"]] * 2, [y - 0.4, y + 0.4], color="tab:red", lw=2)
        ax.set_title(g, fontsize=9)
        ax.set_xlabel("median / ktgfast median (> 1: ktgfast faster; red: goal)", fontsize=8)
    fig.suptitle(suite.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
