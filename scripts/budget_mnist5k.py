"""DML (2 x cnn_small) vs vanilla on MNIST-5k at a short budget: the old
default schedule (multistep at 30/60/90 % of epochs) vs ``schedule: auto``
(the recipe's; cosine for mnist5k), DML with and without its default ramp-up.
docs/rampup.md holds the table this prints.

    OMP_NUM_THREADS=1 python scripts/budget_mnist5k.py --epochs 5 --seeds 0 1 2

Selects nothing by test accuracy: val is the measure, test is for information.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from ktgfast.data import get_dataset
from ktgfast.train.config import TrainConfig
from ktgfast.train.methods import trainer_class

RUNS = [  # (label, graph, node, schedule, graph params)
    ("vanilla, multistep", "vanilla", "student", "multistep", {}),
    ("vanilla, auto", "vanilla", "student", "auto", {}),
    ("DML, multistep, no ramp", "dml", "node0", "multistep", {"rampup": "none"}),
    ("DML, multistep, ramp", "dml", "node0", "multistep", {}),
    ("DML, auto, no ramp", "dml", "node0", "auto", {"rampup": "none"}),
    ("DML, auto, ramp", "dml", "node0", "auto", {}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    data = get_dataset("mnist5k")
    out = tempfile.mkdtemp(prefix="budget_mnist5k_")
    results: dict[str, list[tuple[float, float]]] = {}
    for label, graph, node, schedule, params in RUNS:
        for seed in args.seeds:
            cfg = TrainConfig(epochs=args.epochs, schedule=schedule, seed=seed, threads=args.threads,
                              device="cpu", tensorboard=False, checkpoint=False, verbose=False,
                              progress_bar=False, eval_splits=["val", "test"],
                              out=f"{out}/{graph}_{schedule}_{len(params)}_{seed}")
            t0 = time.time()
            row = trainer_class(None)(graph, data, cfg, graph_params={"model": "cnn_small", **params}).fit()
            val, test = row[f"val_acc:{node}"], row[f"test_acc:{node}"]
            results.setdefault(label, []).append((val, test))
            print(f"{label:26s} seed {seed}: val {val:.2f} test {test:.2f} ({time.time() - t0:.0f} s)",
                  flush=True)
    print(f"\n| run ({args.epochs} epochs, seeds {' '.join(map(str, args.seeds))}) | val acc % "
          "(mean ± std) | per seed | test acc % (mean) |")
    print("|---|---|---|---|")
    for label, vals in results.items():
        v = [a for a, _ in vals]
        t = [b for _, b in vals]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {label} | {statistics.mean(v):.2f} ± {sd:.2f} | {' / '.join(f'{a:.1f}' for a in v)} "
              f"| {statistics.mean(t):.2f} |")


if __name__ == "__main__":
    main()
