"""Vanilla vs Born-Again Networks vs self-distillation on MNIST-5k
(Takagi & Hattori 2019; docs/methods.md#self-distillation-and-born-again-generations).

Both methods train cnn_small for ``--generations`` generations under the same
plateau rules (small patiences, so the study fits in minutes on 2 CPU cores),
on the same seeds.  "Vanilla" is BAN's generation 1: plain CE under the same
rules, from the same initialisation and batches (seed), so it is not run
twice.  Weights are selected on the validation split (500 images carved from
train); the test split (1,000 images) is only scored, once per generation,
with the best-validation weights.

Reports, per method and generation, the test accuracy of the best-val
weights and the cumulative training time (training steps + per-epoch
validation), mean ± std over seeds, and the per-seed paired difference
self-distillation − BAN.

    python scripts/self_distill_mnist5k.py --seeds 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ktgfast.data import get_dataset
from ktgfast.train import TrainConfig
from ktgfast.train.self_distill import BornAgainTrainer, SelfDistillTrainer

METHODS = {"ban": BornAgainTrainer, "self-distill": SelfDistillTrainer}


def run(method: str, data, seed: int, args) -> list[dict]:
    cfg = TrainConfig(
        epochs=args.generations * args.max_epochs_per_generation, generations=args.generations,
        plateau_patience=args.plateau_patience, generation_patience=args.generation_patience,
        max_epochs_per_generation=args.max_epochs_per_generation, batch_size=args.batch_size,
        seed=seed, eval_splits=["val"], device="cpu", threads=args.threads, tensorboard=False,
        verbose=False, progress_bar=False, checkpoint=False, out=f"{args.out}/{method}/seed{seed}")
    trainer = METHODS[method]("vanilla", data, cfg, graph_params={"model": "cnn_small"})
    return trainer.fit()["generations"]


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def table(results: dict, generations: int) -> str:
    """Markdown: one row per (method, generation)."""
    lines = ["| method | generation | test acc of best-val weights (%) | cumulative time (s) | "
             "epochs in generation | ended by |", "|---|---|---|---|---|---|"]
    rows = [("vanilla (= BAN gen 1)", "ban", [1])] + [
        (m, m, list(range(1, generations + 1))) for m in ("ban", "self-distill")]
    for label, method, gens in rows:
        for g in gens:
            per_seed = [r[g - 1] for r in results[method].values()]
            ended = sorted({r["ended_by"] for r in per_seed})
            lines.append(f"| {label} | {g} | {mean_std([r['test_acc'] for r in per_seed])} | "
                         f"{mean_std([r['cum_time_s'] for r in per_seed])} | "
                         f"{mean_std([r['epochs'] for r in per_seed])} | {', '.join(ended)} |")
    lines += ["", "| generation | self-distill − BAN, test acc (pp, paired by seed) | per seed | "
              "paired t (p) |", "|---|---|---|---|"]
    for g in range(1, generations + 1):
        diff = [results["self-distill"][s][g - 1]["test_acc"] - results["ban"][s][g - 1]["test_acc"]
                for s in results["ban"]]
        lines.append(f"| {g} | {mean_std(diff)} | {', '.join(f'{d:+.1f}' for d in diff)} | "
                     f"{paired_t(diff)} |")
    return "\n".join(lines)


def paired_t(diff: list[float]) -> str:
    """Paired t statistic of the per-seed differences (two-sided p with scipy)."""
    if len(diff) < 2 or statistics.stdev(diff) == 0:
        return "n/a"
    t = statistics.fmean(diff) / (statistics.stdev(diff) / len(diff) ** 0.5)
    try:
        from scipy import stats
    except ImportError:
        return f"{t:.2f}"
    return f"{t:.2f} ({2 * stats.t.sf(abs(t), len(diff) - 1):.3f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--plateau-patience", type=int, default=3)
    p.add_argument("--generation-patience", type=int, default=6)
    p.add_argument("--max-epochs-per-generation", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/self_distill_mnist5k")
    p.add_argument("--table-only", action="store_true", help="re-print the table of --out/results.json")
    args = p.parse_args()
    if args.table_only:
        saved = json.loads((Path(args.out) / "results.json").read_text())
        print(table(saved["results"], saved["args"]["generations"]))
        return

    data = get_dataset("mnist5k")
    results: dict[str, dict[int, list[dict]]] = {m: {} for m in METHODS}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for method in METHODS:
            gens = run(method, data, seed, args)
            if len(gens) != args.generations:
                raise RuntimeError(f"{method} seed {seed} finished {len(gens)} generations")
            results[method][seed] = gens
            print(f"seed {seed} {method:<12} test acc per generation "
                  f"{[g['test_acc'] for g in gens]}  cumulative s {[g['cum_time_s'] for g in gens]}  "
                  f"epochs {[g['epochs'] for g in gens]}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    md = table(results, args.generations)
    (out / "table.md").write_text(md + "\n")
    print(f"\n{md}\n\nwall time {time.perf_counter() - t0:.0f}s; results in {out}")


if __name__ == "__main__":
    main()
