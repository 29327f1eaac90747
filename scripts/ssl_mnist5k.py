"""Supervised vs Π-model vs Mean Teacher vs FixMatch on MNIST-5k (thesis ch. 5;
docs/methods.md#semi-supervised-ktg).

Every method is a preset graph trained by the semi-supervised trainer on the
same labelled subset per seed (``labels_per_class`` images per class, drawn
with ``label_seed = seed``; the other 3,500 − 10·k training images are the
unlabelled set, labels hidden).  The validation split (500 images, carved
from training data by the dataset) is the only one used for model selection;
the 1,000 test images are read at the evaluation periods and reported as

* ``last``: test accuracy at the last step;
* ``val-best``: test accuracy at the evaluation period whose *validation*
  accuracy was highest (first one on ties).

    python scripts/ssl_mnist5k.py --out runs/ssl_mnist5k

prints a Markdown table (mean ± sample std over seeds) and writes
``results.json`` with every run's history.  One intra-op thread per run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ktgfast.data import get_dataset
from ktgfast.graph import get_preset
from ktgfast.train import TrainConfig, Trainer

METHODS = {  # row name -> (preset, node whose accuracy is reported)
    "supervised (labelled only)": ("ssl-supervised", "node1"),
    "Π-model": ("pi-model", "node1"),
    "Mean Teacher (student)": ("mean-teacher", "node1"),
    "Mean Teacher (EMA node)": ("mean-teacher", "node2"),
    "FixMatch": ("fixmatch", "node1"),
}


def run(preset: str, seed: int, args, data) -> list[dict]:
    cfg = TrainConfig(
        labels_per_class=args.labels_per_class, label_seed=seed, seed=seed, batch_size=args.batch_size,
        unlabeled_batch_size=args.unlabeled_batch_size, iterations=args.iterations,
        eval_every=args.eval_every, lr=args.lr, weight_decay=args.weight_decay, schedule="cosine",
        ema_decay=args.ema_decay, eval_splits=["val", "test"], device="cpu", checkpoint=False,
        tensorboard=False, progress_bar=False, verbose=False,
        out=str(Path(args.out) / f"{preset}-seed{seed}"))
    trainer = Trainer(get_preset(preset), data, cfg)
    trainer.fit()
    return trainer.history


def scores(history: list[dict], node: str) -> dict:
    best = max(range(len(history)), key=lambda i: (history[i][f"val_acc:{node}"], -i))
    return {"last": history[-1][f"test_acc:{node}"], "val-best": history[best][f"test_acc:{node}"],
            "val-best step": history[best]["step"]}


def mean_std(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.2f} ± {sd:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--unlabeled-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--ema-decay", type=float, default=0.99)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/ssl_mnist5k")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = get_dataset("mnist5k")
    t0 = time.perf_counter()
    histories: dict[str, list] = {}
    for preset in dict.fromkeys(pr for pr, _ in METHODS.values()):
        histories[preset] = []
        for seed in range(args.seeds):
            t = time.perf_counter()
            histories[preset].append(run(preset, seed, args, data))
            print(f"{preset} seed {seed}: {time.perf_counter() - t:.0f}s", flush=True)
    wall = time.perf_counter() - t0
    rows = {}
    for name, (preset, node) in METHODS.items():
        s = [scores(h, node) for h in histories[preset]]
        rows[name] = {k: [x[k] for x in s] for k in ("last", "val-best", "val-best step")}
    print(f"\nMNIST-5k, {args.labels_per_class} labels/class, {args.seeds} seeds, {args.iterations} "
          f"iterations, batch {args.batch_size} + {args.unlabeled_batch_size} unlabelled, "
          f"wall {wall / 60:.1f} min\n")
    print("| method | test acc, last step (%) | test acc at best val (%) |")
    print("|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {mean_std(r['last'])} | {mean_std(r['val-best'])} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"args": vars(args), "wall_s": wall, "rows": rows, "histories": histories}, indent=1))


if __name__ == "__main__":
    main()
