"""Retrain a search's best graph and a DML baseline on the same budget.

Both train on all non-test data (train + val) for the same epochs and seeds
and are scored on the test split, which the search itself never saw.

    python scripts/search_vs_dml.py searches/ktg-4gates-3nodes-mnist5k --data mnist5k --epochs 8 --seeds 3
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

from ktgfast.data import get_dataset
from ktgfast.graph import get_preset, load_graph
from ktgfast.search.study import full_train_view
from ktgfast.train import TrainConfig, Trainer


def run(graph, data, epochs: int, seeds: int, out: str) -> list[float]:
    accs = []
    for seed in range(seeds):
        cfg = TrainConfig(epochs=epochs, eval_splits=["test"], seed=seed, tensorboard=False,
                          verbose=False, checkpoint=False, out=f"{out}/seed{seed}")
        row = Trainer(graph, data, cfg).fit()
        accs.append(row[f"test_acc:{graph.target_name}"])
    return accs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study_dir")
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    best = load_graph(f"{args.study_dir}/best_graph.yaml")
    data = full_train_view(get_dataset(args.data))
    target_model = best.node(best.target_name).model
    dml = get_preset("dml", k=len(best.nodes), model=target_model)
    for name, graph in (("best graph", best), (f"DML x{len(best.nodes)} ({target_model})", dml)):
        accs = run(graph, data, args.epochs, args.seeds, f"{args.study_dir}/compare/{name.split()[0]}")
        print(f"{name:<28} test acc of {graph.target_name}: {statistics.fmean(accs):.2f} ± "
              f"{statistics.stdev(accs) if len(accs) > 1 else 0:.2f}%  {[round(a, 2) for a in accs]}",
              flush=True)


if __name__ == "__main__":
    main()
