"""``ktgfast analyze RUN_DIR``: per-pair diversity tables and heat maps of a
trained graph, attention-map examples, and the gradient-conflict tables of a
distillation run (thesis tables 4.6, 4.10, 4.11).

Outputs in ``RUN_DIR/analysis`` (or ``out``): ``nodes.csv`` (accuracy per
node and of the ensemble), ``pairs.csv`` (MutualKL, ΔAccuracy, attention
error per model pair), ``summary.json``, ``pairs.png``, ``attention_maps.png``,
and for PCGrad distillations ``conflicts_<knowledge>.csv`` + ``conflicts.png``.
"""
from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import torch

from ..data import TensorLoader
from ..train import run_dir as run_folders  # looked up at each call (patchable)
from ..train.distill import read_conflicts_csv
from .metrics import accuracy, attention_abs_error, delta_accuracy, mutual_kl, normalise_map
from .plots import plot_attention_examples, plot_conflicts, plot_pairs

SPLITS = ("test", "val", "train")


@torch.no_grad()
def predict(run, split: str, batch_size: int = 500, device="cpu"):
    """Logits ``(M, N, C)``, attention maps ``(M, N, H, W)`` (None when a model
    has no map) and labels of every model node of ``run`` on ``split``."""
    data = getattr(run.data, split, None)
    if data is None:
        raise ValueError(f"dataset {run.data.name!r} has no {split!r} split; allowed: "
                         f"{', '.join(s for s in SPLITS if getattr(run.data, s, None) is not None)}")
    loader = TensorLoader(data, batch_size, shuffle=False, drop_last=False, augment=None,
                          mean=run.data.mean, std=run.data.std, device=device)
    logits, maps, labels = [], [], []
    for x, y, _ in loader:
        outs = [m.forward_outputs(x) for m in run.models.values()]
        logits.append(torch.stack([o.logits.float() for o in outs]))
        if all(o.attention is not None for o in outs):
            maps.append(torch.stack([o.attention.float() for o in outs]))
        labels.append(y)
    z = torch.cat(logits, 1).cpu()
    q = torch.cat(maps, 1).cpu() if len(maps) == len(logits) else None
    return z, q, torch.cat(labels).cpu()


def pair_table(names, z, q, y) -> list[dict]:
    rows = []
    for i, j in itertools.combinations(range(len(names)), 2):
        row = {"node_a": names[i], "node_b": names[j],
               "mutual_kl": round(mutual_kl(z[i], z[j]).item(), 6),
               "delta_accuracy": round(delta_accuracy(z[i], z[j], y), 4)}
        if q is not None and q[i].shape == q[j].shape:
            row["attention_abs_error"] = round(attention_abs_error(q[i], q[j]).item(), 6)
        rows.append(row)
    return rows


def conflict_blocks(tasks: list[str], counts: torch.Tensor) -> dict[str, tuple[list[str], torch.Tensor]]:
    """The teacher-by-teacher block of each knowledge kind (``prob``, ``att``):
    tables 4.10 (distributions) and 4.11 (attention maps)."""
    blocks = {}
    for kind in ("prob", "att"):
        idx = [i for i, t in enumerate(tasks) if t.startswith(kind + ":")]
        if idx:
            blocks[kind] = ([tasks[i].split(":", 1)[1] for i in idx], counts[idx][:, idx])
    return blocks


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)


def _matrix_text(title: str, names: list[str], m) -> str:
    w = max(8, *(len(n) for n in names)) + 1
    lines = [title, " " * w + "".join(f"{n:>{w}}" for n in names)]
    for i, n in enumerate(names):
        cells = "".join(f"{'-':>{w}}" if i == j else f"{m[i][j]:>{w}}" for j in range(len(names)))
        lines.append(f"{n:<{w}}{cells}")
    return "\n".join(lines)


def analyze_run(run_dir: str | Path, split: str = "test", out: str | Path | None = None,
                device: str = "cpu", examples: int = 6, plots: bool = True) -> dict:
    """Analyse the run in ``run_dir``; returns the summary that is also written."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    run = run_folders.load_run(run_dir, device)
    out = Path(out) if out else Path(run_dir) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    names = list(run.models)
    z, q, y = predict(run, split, device=device)
    nodes = [{"node": n, "accuracy": round(accuracy(z[i], y), 4)} for i, n in enumerate(names)]
    for e in (n for n in run.graph.nodes if n.is_ensemble):
        idx = [names.index(m) for m in run.graph.members(e.name)]
        nodes.append({"node": e.name, "accuracy": round(accuracy(z[idx].mean(0), y), 4)})
    pairs = pair_table(names, z, q, y)
    summary = {"run": str(run_dir), "split": split, "epoch": run.epoch, "samples": len(y),
               "nodes": nodes, "pairs": pairs}
    text = [f"{run_dir} ({split}, {len(y)} samples, epoch {run.epoch})", "",
            "node accuracy %: " + ", ".join(f"{r['node']} {r['accuracy']:.2f}" for r in nodes)]
    if pairs:
        text += ["", "pair  mutual_kl  delta_acc(pp)  attention_abs_error"]
        text += [f"{r['node_a']}-{r['node_b']}  {r['mutual_kl']:.4f}  {r['delta_accuracy']:+.2f}  "
                 f"{r.get('attention_abs_error', float('nan')):.4f}" for r in pairs]
    _write_csv(out / "nodes.csv", nodes)
    _write_csv(out / "pairs.csv", pairs)
    conflicts_path = Path(run_dir) / "conflicts.csv"
    if conflicts_path.exists():
        tasks, counts = read_conflicts_csv(conflicts_path)
        blocks = conflict_blocks(tasks, counts)
        summary["conflicts"] = {k: {"teachers": t, "counts": m.tolist()} for k, (t, m) in blocks.items()}
        for kind, (teachers, m) in blocks.items():
            title = {"prob": "conflicts between distribution losses (table 4.10 layout)",
                     "att": "conflicts between attention-map losses (table 4.11 layout)"}[kind]
            text += ["", _matrix_text(title, teachers, m.tolist())]
            _write_csv(out / f"conflicts_{kind}.csv",
                       [{"teacher": t, **dict(zip(teachers, r))} for t, r in zip(teachers, m.tolist())])
        if plots:
            plot_conflicts(blocks, out / "conflicts.png")
    if plots:
        if pairs:
            plot_pairs(names, pairs, out / "pairs.png")
        if q is not None:
            plot_attention_examples(run, split, names, normalise_map_all(q), examples,
                                    out / "attention_maps.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["text"] = "\n".join(text)
    summary["out"] = str(out)
    return summary


def normalise_map_all(q: torch.Tensor) -> torch.Tensor:
    return torch.stack([normalise_map(qi) for qi in q])
