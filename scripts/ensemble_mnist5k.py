"""Ensemble KTG and ensemble -> student distillation at CPU scale on MNIST-5k.

Part 1 trains three 3-model ensembles (cnn_small) per seed: independent, DML,
and the push-pull graph (Prob(-)&Att(-) between two nodes), and reports the
ensemble's test accuracy plus the diversity of the trained models
(``ktgfast analyze``: MutualKL, ΔAccuracy, attention error).
Part 2 distils the push-pull ensemble of each seed into one cnn_small:
averaged ensemble, per-teacher distributions, + attention maps (summed),
+ attention maps with PCGrad, and reports the students' test accuracy and the
PCGrad conflict counts.

    python scripts/ensemble_mnist5k.py --epochs 6 --seeds 2 --out runs/ens_mnist5k
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from ktgfast.analysis import analyze_run
from ktgfast.data import get_dataset
from ktgfast.graph import get_preset
from ktgfast.train import TrainConfig, Trainer
from ktgfast.train.distill import DistillSettings, Distiller

GRAPHS = ["ens-independent", "ens-dml", "ens-push-pull-3node"]
STUDENTS = {
    "averaged ensemble (prob)": dict(target="ensemble", knowledge=["prob"]),
    "per-teacher prob": dict(knowledge=["prob"]),
    "per-teacher prob+att, sum": dict(knowledge=["prob", "att"]),
    "per-teacher prob+att, PCGrad": dict(knowledge=["prob", "att"], aggregate="pcgrad"),
}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--T", type=float, default=2.0)
    ap.add_argument("--out", default="runs/ens_mnist5k")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = get_dataset("mnist5k")
    out = Path(args.out)

    def cfg(run: Path, seed: int) -> TrainConfig:
        return TrainConfig(epochs=args.epochs, seed=seed, out=str(run), tensorboard=False,
                           progress_bar=False, verbose=False, threads=args.threads)

    ens = {g: [] for g in GRAPHS}
    diversity = {g: [] for g in GRAPHS}
    for seed in range(args.seeds):
        for g in GRAPHS:
            run = out / f"{g}-s{seed}"
            row = Trainer(get_preset(g, model="cnn_small"), data, cfg(run, seed)).fit()
            ens[g].append(row["test_acc:ensemble"])
            s = analyze_run(run, split="test", plots=seed == 0)
            diversity[g].append(s["pairs"])
            print(f"seed {seed} {g}: ensemble test {row['test_acc:ensemble']:.2f}", flush=True)
    print(f"\nPart 1: ensembles of 3 x cnn_small, {args.epochs} epochs, {args.seeds} seeds "
          "(test accuracy %, mean ± std; pair metrics averaged over pairs and seeds)")
    print("| graph | ensemble test % | MutualKL | ΔAccuracy (pp) | attention abs. error |")
    print("|---|---|---|---|---|")
    for g in GRAPHS:
        pairs = [p for run in diversity[g] for p in run]
        avg = {k: statistics.mean(p[k] for p in pairs) for k in ("mutual_kl", "delta_accuracy",
                                                                 "attention_abs_error")}
        print(f"| {g} | {mean_std(ens[g])} | {avg['mutual_kl']:.4f} | {avg['delta_accuracy']:+.2f} | "
              f"{avg['attention_abs_error']:.4f} |")

    students = {k: [] for k in STUDENTS}
    conflicts = []
    for seed in range(args.seeds):
        teachers = out / f"ens-push-pull-3node-s{seed}"
        for name, kw in STUDENTS.items():
            run = out / f"student-{name.split()[0]}-{kw.get('aggregate', 'sum')}-{len(kw['knowledge'])}-s{seed}"
            d = Distiller(DistillSettings(teachers=str(teachers), T=args.T, **kw), data, cfg(run, seed))
            row = d.fit()
            students[name].append(row["test_acc:student"])
            if kw.get("aggregate") == "pcgrad":
                conflicts.append((d.task_names, d.conflicts.cpu()))
            print(f"seed {seed} {name}: student test {row['test_acc:student']:.2f}", flush=True)
    print(f"\nPart 2: push-pull ensemble -> one cnn_small, T={args.T}, {args.epochs} epochs")
    print("| student | test % |")
    print("|---|---|")
    for name in STUDENTS:
        print(f"| {name} | {mean_std(students[name])} |")
    tasks, total = conflicts[0][0], sum(c for _, c in conflicts)
    steps = args.seeds * args.epochs * (len(data.train.labels) // TrainConfig().batch_size)
    print(f"\nPCGrad conflicts summed over {args.seeds} seeds ({steps} steps), tasks {tasks}:")
    for t, r in zip(tasks, total.tolist()):
        print(f"  {t:<12} {r}")


if __name__ == "__main__":
    main()
