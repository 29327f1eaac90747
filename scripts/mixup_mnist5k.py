"""DML (2 x cnn_small) on MNIST-5k without mixup, with mixup (Beta(1, 1)),
with superclass mixup (Beta(8, 8) / Beta(0.2, 0.2)) and with superclass
selection (0.5 / {0.9, 0.1}); several seeds, the same recipe otherwise.

Reported: each node's test accuracy after the last epoch, mean ± std over
seeds (no model selection, nothing tuned on test), and the last epoch's
validation accuracy beside it.  Digits use the default superclasses of
``ktgfast.data.superclass.DIGIT_SUPERCLASSES`` (loop / straight / curve).

    python scripts/mixup_mnist5k.py --epochs 10 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ktgfast.data import get_dataset
from ktgfast.train import TrainConfig, Trainer

VARIANTS = {  # label -> TrainConfig overrides
    "no mixup": {"mixup": "none"},
    "mixup Beta(1,1)": {"mixup": "beta", "mixup_alpha": 1.0},
    "superclass Beta(8,8)/Beta(0.2,0.2)": {"mixup": "superclass_beta"},
    "superclass select 0.5/{0.9,0.1}": {"mixup": "superclass_select"},
}
NODES = ("node0", "node1")


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (shared CPUs: 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/mixup_mnist5k")
    args = p.parse_args()

    data = get_dataset("mnist5k")
    results: dict[str, list[dict]] = {}
    for label, overrides in VARIANTS.items():
        results[label] = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            cfg = TrainConfig(epochs=args.epochs, seed=seed, threads=args.threads, device=args.device,
                              tensorboard=False, checkpoint=False, verbose=False,
                              out=f"{args.out}/{overrides['mixup']}/seed{seed}", **overrides)
            row = Trainer("dml", data, cfg, graph_params={"model": "cnn_small"}).fit()
            results[label].append(row)
            print(f"{label:<36} seed {seed}: test " +
                  " ".join(f"{n} {row[f'test_acc:{n}']:.1f}" for n in NODES) +
                  f"  ({time.perf_counter() - t0:.0f}s)", flush=True)

    print(f"\nMNIST-5k, DML 2 x cnn_small, {args.epochs} epochs, seeds 0-{args.seeds - 1}: "
          "accuracy (%) after the last epoch, mean ± std over seeds\n")
    print("| variant | test node0 | test node1 | val node0 | val node1 |")
    print("|---|---|---|---|---|")
    for label, rows in results.items():
        test = [mean_std([r[f"test_acc:{n}"] for r in rows]) for n in NODES]
        val = [mean_std([r[f"val_acc:{n}"] for r in rows]) for n in NODES]
        print(f"| {label} | {' | '.join(test)} | {' | '.join(val)} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(
        {"epochs": args.epochs, "seeds": args.seeds, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
