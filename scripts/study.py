"""The evidence page: every method against its baseline on MNIST-5k, paired seeds.

    OMP_NUM_THREADS=1 python scripts/study.py --out study/ [--seeds 5] [--rows NAME,...]
        [--epochs N] [--max-minutes M] [--dry-run]

Each comparison is a paper's claim "A > B" between arms trained on the same
seeds (seed s of every arm shares the initialisation seed, batches and, for
semi-supervised rows, the labelled subset).  An arm's score is the TEST
accuracy of the epoch (evaluation period, generation) that VALIDATION chose
(first on ties); test selects nothing.  Every (comparison, arm, seed) is
appended to ``<out>/results.csv`` as it finishes, so a stopped study resumes
where it stopped; ``docs/results.md`` and ``docs/results.png`` are written
from that file alone (scripts/study_page.py; statistics: scripts/study_stats.py;
the scheduler: scripts/study_runner.py).  ``--dry-run``
trains every row for a few steps on a 256-image slice (results in
``<out>``, the page too: docs/ is left alone).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_page import ROOT, PageSpec, machine, table_rows, write_page  # noqa: E402,F401
from study_runner import FIELDS, append_results, read_results, run_all  # noqa: E402,F401



# ---------------------------------------------------------------- context
@dataclass
class Ctx:
    """What every job needs: the data, the budget and where runs go."""
    data: object
    out: Path
    epochs: int
    threads: int = 1
    dry: bool = False
    ssl_iterations: int = 600
    ssl_eval_every: int = 100

    def config(self, run: str, seed: int, **overrides):
        from ktgfast.train import TrainConfig
        folder = self.out / "runs" / run / f"seed{seed}"
        shutil.rmtree(folder, ignore_errors=True)  # only rerun when results.csv lacks it
        kw = dict(epochs=self.epochs, seed=seed, threads=self.threads, device="cpu", tensorboard=False,
                  checkpoint=False, verbose=False, progress_bar=False, eval_splits=["val", "test"],
                  out=str(folder))
        kw.update(overrides)
        return TrainConfig(**kw)


def select(history: list[dict], node: str, when: str = "epoch") -> dict:
    """Test accuracy of ``node`` at the period of best validation accuracy (first on ties)."""
    rows = [r for r in history if f"val_acc:{node}" in r]
    if not rows:
        raise ValueError(f"no val_acc:{node} in the run's history; columns: {sorted(history[-1]) if history else []}")
    best = max(range(len(rows)), key=lambda i: (rows[i][f"val_acc:{node}"], -i))
    r = rows[best]
    return {"val": r[f"val_acc:{node}"], "test": r[f"test_acc:{node}"], "selected": f"{when} {r[when]}"}


# ---------------------------------------------------------------- jobs
# A job trains once per seed and scores one or more arms: fn(seed, ctx) -> {arm: score dict}.
def graph_job(arm: str, run: str, graph: str, node: str, params: dict | None = None, **cfg) -> "Job":
    def fn(seed: int, ctx: Ctx) -> dict:
        from ktgfast.train.methods import trainer_class
        t = trainer_class(None)(graph, ctx.data, ctx.config(run, seed, **cfg),
                                graph_params={"model": "cnn_small", **(params or {})})
        t.fit()
        return {arm: select(t.history, node)}
    return Job(run, (arm,), fn)


def ensemble_job(arm: str, graph: str) -> "Job":
    """An ensemble of 3 x cnn_small scored by its mean-logit ensemble; weights kept
    (checkpoint) for the distillation row."""
    def fn(seed: int, ctx: Ctx) -> dict:
        from ktgfast.graph import get_preset
        from ktgfast.train import Trainer
        t = Trainer(get_preset(graph, model="cnn_small"), ctx.data, ctx.config(graph, seed, checkpoint=True))
        t.fit()
        return {arm: select(t.history, "ensemble")}
    return Job(graph, (arm,), fn)


TEACHERS = "ens-push-pull-3node"


def distill_job(arm: str, run: str, **settings) -> "Job":
    """One cnn_small distilled from the seed's push-pull ensemble (trained here if
    the ensembles row has not left it)."""
    def fn(seed: int, ctx: Ctx) -> dict:
        from ktgfast.train.distill import DistillSettings, Distiller
        teachers = ctx.out / "runs" / TEACHERS / f"seed{seed}"
        if not (teachers / "config.yaml").exists() or not any(teachers.glob("*.pt")):
            ensemble_job("teachers", TEACHERS).fn(seed, ctx)
        d = Distiller(DistillSettings(teachers=str(teachers), T=2.0, **settings), ctx.data,
                      ctx.config(run, seed))
        d.fit()
        return {arm: select(d.history, "student")}
    return Job(run, (arm,), fn, needs=(TEACHERS,))


SSL_NODE = {"ssl-supervised": "node1", "pi-model": "node1", "mean-teacher": "node1", "fixmatch": "node1"}


def ssl_job(arm: str, preset: str, run: str | None = None, node: str | None = None, **params) -> "Job":
    """10 labels per class (label_seed = seed), the rest unlabelled; the recipe of
    scripts/ssl_mnist5k.py.  ``params`` go to the preset; ``node`` is the node
    scored (default: the preset's learner)."""
    def fn(seed: int, ctx: Ctx) -> dict:
        from ktgfast.graph import get_preset
        from ktgfast.train import Trainer
        cfg = ctx.config(run or preset, seed, labels_per_class=10, label_seed=seed, batch_size=32,
                         unlabeled_batch_size=64, iterations=ctx.ssl_iterations,
                         eval_every=ctx.ssl_eval_every, lr=0.03, weight_decay=5e-4, schedule="cosine",
                         ema_decay=0.99)
        t = Trainer(get_preset(preset, **params), ctx.data, cfg)
        t.fit()
        return {arm: select(t.history, node or SSL_NODE[preset], when="step")}
    return Job(run or preset, (arm,), fn)


GENERATIONS = 3


def generations_job(method: str, generations: int = GENERATIONS, longer: int = 1) -> "Job":
    """BAN or self-distillation for ``generations`` generations of cnn_small (the
    recipe of scripts/self_distill_mnist5k.py), each capped at ``longer`` times
    the study's epochs; one arm per generation, scored by the generation's
    best-validation weights."""
    suffix = "" if longer == 1 else f" ({longer}x epochs)"
    name = method if longer == 1 else f"{method}-x{longer}"

    def fn(seed: int, ctx: Ctx) -> dict:
        from ktgfast.train.self_distill import BornAgainTrainer, SelfDistillTrainer
        cls = {"ban": BornAgainTrainer, "self-distill": SelfDistillTrainer}[method]
        per = longer * ctx.epochs
        cfg = ctx.config(name, seed, epochs=generations * per, generations=generations,
                         plateau_patience=3, generation_patience=6, max_epochs_per_generation=per,
                         eval_splits=["val", "test"])
        gens = cls("vanilla", ctx.data, cfg, graph_params={"model": "cnn_small"}).fit()["generations"]
        if len(gens) != generations:
            raise RuntimeError(f"{method} seed {seed} finished {len(gens)} of {generations} generations")
        return {f"{method} gen {g + 1}{suffix}": {"val": r["best_val_acc"], "test": r["test_acc"],
                                                  "selected": f"gen {g + 1} epoch {r['best_epoch']}"}
                for g, r in enumerate(gens)}
    return Job(name, tuple(f"{method} gen {g}{suffix}" for g in range(1, generations + 1)), fn)


SEARCH_TRIALS = 4


def search_job(arm: str, space: str, trials: int = SEARCH_TRIALS) -> "Job":
    """A small graph search (random sampler, seed = seed) of ``trials`` trials of
    2 epochs on the val split, then the best graph retrained for ``epochs`` like
    any other arm.  One trial is a random graph of the space (the first one the
    4-trial search of the same seed draws): no selection at all."""
    name = f"search-{space}" + ("" if trials == SEARCH_TRIALS else f"-t{trials}")

    def fn(seed: int, ctx: Ctx) -> dict:
        from ktgfast.search import search
        from ktgfast.train import Trainer
        folder = ctx.out / "searches" / (f"seed{seed}" + ("" if trials == SEARCH_TRIALS else f"-t{trials}"))
        shutil.rmtree(folder / f"{space}-mnist5k", ignore_errors=True)
        res = search(space, "mnist5k", trials=1 if ctx.dry else trials, epochs=1 if ctx.dry else 2,
                     out=str(folder), seed=seed, config={"threads": ctx.threads, "device": "cpu"})
        if res.best_graph is None:
            raise RuntimeError(f"search {space} seed {seed}: no trial finished")
        g = res.best_graph
        t = Trainer(g, ctx.data, ctx.config("searched-" + name[len("search-"):], seed))
        t.fit()
        return {arm: select(t.history, g.target_name)}
    return Job(name, (arm,), fn)


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class Job:
    name: str                        # the run's identity: jobs of the same name train the same thing
    arms: tuple[str, ...]            # what it scores
    fn: Callable[[int, Ctx], dict]
    needs: tuple[str, ...] = ()      # jobs (by name) that must have run on the seed first


@dataclass(frozen=True)
class Comparison:
    name: str
    claim: str                       # the paper's direction, in words
    pairs: list[tuple[str, str]]     # (arm the paper says is better, the other)
    jobs: list[Job]
    budget: str = "epochs"           # what the budget column shows
    source: str = ""
    notes: str = ""
    ablation_of: str = ""            # this row varies one factor of that row

    def arms(self) -> list[str]:
        return list(dict.fromkeys(a for p in self.pairs for a in p))


NO_RAMP = {"rampup": "none"}
COMPARISONS = [
    Comparison("dml", "DML > vanilla", [("DML node 0", "vanilla")],
               [graph_job("vanilla", "vanilla", "vanilla", "student"),
                graph_job("DML node 0", "dml", "dml", "node0")],
               source="Zhang et al. 2018 (DML), Table 1"),
    # Ablation of "dml" (docs/rampup.md): does the edge ramp-up decide whether DML is level with vanilla?
    Comparison("dml-no-ramp", "ablation of dml: DML without its ramp-up > vanilla",
               [("DML node 0, no ramp", "vanilla")],
               [graph_job("vanilla", "vanilla", "vanilla", "student"),
                graph_job("DML node 0, no ramp", "dml-noramp", "dml", "node0", NO_RAMP)],
               source="docs/rampup.md", notes="the dml row with `rampup: none` on DML; vanilla runs shared",
               ablation_of="dml"),
    Comparison("mixup", "superclass mixup > mixup > none (in DML)",
               [("superclass mixup", "mixup"), ("mixup", "no mixup"), ("superclass mixup", "no mixup")],
               [graph_job("no mixup", "dml", "dml", "node0"),
                graph_job("mixup", "dml-mixup", "dml", "node0", mixup="beta", mixup_alpha=1.0),
                graph_job("superclass mixup", "dml-scmixup", "dml", "node0", mixup="superclass_beta")],
               source="docs/mixup.md (superclass mixup in DML)"),
    Comparison("mixup-single", "ablation of mixup: mixup > none for one cnn_small (no DML)",
               [("vanilla + mixup", "vanilla")],
               [graph_job("vanilla", "vanilla", "vanilla", "student"),
                graph_job("vanilla + mixup", "vanilla-mixup", "vanilla", "student", mixup="beta", mixup_alpha=1.0)],
               source="Zhang et al. 2018 (mixup)", notes="is the mixup loss specific to DML's peers?",
               ablation_of="mixup"),
    Comparison("ensembles", "push-pull ensemble > independent ensemble",
               [("push-pull", "independent")],
               [ensemble_job("independent", "ens-independent"), ensemble_job("push-pull", TEACHERS)],
               source="docs/ensemble.md (thesis ch. 4)"),
    # Ablation of "ensembles": does the coupling of the members move the ensemble at all at this scale?
    Comparison("ensembles-pull", "ablation of ensembles: independent > pull-only (DML) ensemble",
               [("independent", "pull-only (ens-dml)")],
               [ensemble_job("independent", "ens-independent"), ensemble_job("pull-only (ens-dml)", "ens-dml")],
               source="docs/ensemble.md",
               notes="ens-dml pulls every member toward the others (Prob Through both ways), the opposite of "
                     "a push; independent runs shared", ablation_of="ensembles"),
    Comparison("distillation", "per-teacher + PCGrad > per-teacher sum > averaged ensemble",
               [("per-teacher PCGrad", "per-teacher sum"), ("per-teacher sum", "averaged"),
                ("per-teacher PCGrad", "averaged")],
               [distill_job("averaged", "distill-avg", target="ensemble", knowledge=["prob"]),
                distill_job("per-teacher sum", "distill-sum", knowledge=["prob", "att"]),
                distill_job("per-teacher PCGrad", "distill-pcgrad", knowledge=["prob", "att"],
                            aggregate="pcgrad")],
               source="docs/ensemble.md (thesis ch. 4)",
               notes="teachers: the push-pull ensemble of the same seed; students see prob (+ att) at T = 2"),
    # Ablation of "distillation": the per-teacher arms see attention maps too; is it the att edges?
    Comparison("distillation-prob", "ablation of distillation: per-teacher sum without attention edges",
               [("per-teacher sum, prob only", "averaged"), ("per-teacher sum, prob only", "per-teacher sum")],
               [distill_job("averaged", "distill-avg", target="ensemble", knowledge=["prob"]),
                distill_job("per-teacher sum", "distill-sum", knowledge=["prob", "att"]),
                distill_job("per-teacher sum, prob only", "distill-sum-prob", knowledge=["prob"])],
               source="docs/ensemble.md", notes="the distillation row's students, one factor changed: "
               "`knowledge: [prob]`; other runs shared", ablation_of="distillation"),
    # Ablation of "distillation": K summed per-teacher KL terms pull like one KL to the teachers' mean
    # probability with weight K (docs/methods.md); kd_weight 1/K removes that factor.
    Comparison("distillation-scale", "ablation of distillation: per-teacher + PCGrad > per-teacher sum > "
               "averaged, each teacher term weighted 1/3",
               [("per-teacher PCGrad ÷3", "per-teacher sum ÷3"), ("per-teacher sum ÷3", "averaged"),
                ("per-teacher sum ÷3", "per-teacher sum")],
               [distill_job("averaged", "distill-avg", target="ensemble", knowledge=["prob"]),
                distill_job("per-teacher sum", "distill-sum", knowledge=["prob", "att"]),
                distill_job("per-teacher sum ÷3", "distill-sum-w3", knowledge=["prob", "att"], kd_weight=1 / 3),
                distill_job("per-teacher PCGrad ÷3", "distill-pcgrad-w3", knowledge=["prob", "att"],
                            aggregate="pcgrad", kd_weight=1 / 3)],
               source="docs/methods.md (distillation)", notes="the distillation row's students with "
               "`kd_weight: 1/3` (3 teachers); other runs shared", ablation_of="distillation"),
    Comparison("ssl", "FixMatch, Mean Teacher, Π-model > supervised (10 labels per class)",
               [("FixMatch", "supervised"), ("Mean Teacher", "supervised"), ("Π-model", "supervised")],
               [ssl_job("supervised", "ssl-supervised"), ssl_job("FixMatch", "fixmatch"),
                ssl_job("Mean Teacher", "mean-teacher"), ssl_job("Π-model", "pi-model")],
               budget="iterations", source="docs/semi_supervised.md (thesis ch. 5)"),
    # Ablation of "ssl": Mean Teacher's student peaks early and then falls while the consistency weight
    # ramps up; weak-weak views leave the consistency target almost the student's own prediction.
    Comparison("ssl-views", "ablation of ssl: consistency methods with FixMatch's strong views > supervised",
               [("Mean Teacher, strong views", "supervised"), ("Π-model, strong views", "supervised"),
                ("Mean Teacher, strong views", "Mean Teacher")],
               [ssl_job("supervised", "ssl-supervised"), ssl_job("Mean Teacher", "mean-teacher"),
                ssl_job("Mean Teacher, strong views", "mean-teacher", "mean-teacher-strong", views="strong"),
                ssl_job("Π-model, strong views", "pi-model", "pi-model-strong", views="strong")],
               budget="iterations", source="docs/semi_supervised.md",
               notes="`views: strong` (ζ1 strong, ζ2 weak, as FixMatch); other runs shared", ablation_of="ssl"),
    Comparison("generations", "self-distillation > BAN, per generation",
               [(f"self-distill gen {g}", f"ban gen {g}") for g in range(1, GENERATIONS + 1)],
               [generations_job("ban"), generations_job("self-distill")],
               budget="max epochs per generation", source="docs/self_distillation.md (Takagi & Hattori 2019)"),
    # Ablation of "generations": is self-distillation's first generation only slower (soft targets from
    # the earlier epochs' predictions) at this budget?
    Comparison("generations-longer", "ablation of generations: self-distillation > BAN, one generation, "
               "twice the epochs", [("self-distill gen 1 (2x epochs)", "ban gen 1 (2x epochs)")],
               [generations_job("ban", 1, longer=2), generations_job("self-distill", 1, longer=2)],
               budget="max epochs per generation", source="docs/self_distillation.md",
               notes="generation 1 only (BAN's is vanilla training under the plateau rules), cap 2x the "
                     "study's epochs", ablation_of="generations"),
    Comparison("search-vs-dml", "searched KTG (4 gates, 3 nodes) > DML x3 at equal training budget",
               [("searched KTG", "DML x3")],
               [search_job("searched KTG", "ktg-4gates-3nodes"),
                graph_job("DML x3", "dml3", "dml", "node0", {"k": 3})],
               source="Minami et al. 2020 (KTG), Table 2",
               notes="search: 4 random trials of 2 epochs per seed (a tiny budget; the paper: 1,500+ trials)"),
    # Ablation of "search-vs-dml": does a 4-trial, 2-epoch search select anything? Its best graph
    # against the first graph it drew (a 1-trial search: a random graph of the space).
    Comparison("search-selection", "ablation of search-vs-dml: best of 4 trials > a random graph of the space",
               [("searched KTG", "random KTG graph"), ("DML x3", "random KTG graph")],
               [search_job("searched KTG", "ktg-4gates-3nodes"),
                search_job("random KTG graph", "ktg-4gates-3nodes", trials=1),
                graph_job("DML x3", "dml3", "dml", "node0", {"k": 3})],
               source="Minami et al. 2020 (KTG)", notes="the random graph is trial 0 of the same seed's "
               "search, retrained the same way; other runs shared", ablation_of="search-vs-dml"),
    Comparison("sine-vs-4gates", "Sine-gate search > four-gate search (3 nodes)",
               [("Sine gates", "four gates")],
               [search_job("four gates", "ktg-4gates-3nodes"), search_job("Sine gates", "ktg-sine-3nodes")],
               source="thesis ch. 3", notes="search: 4 random trials of 2 epochs per seed, each space"),
    # Ablation of "sine-vs-4gates": the same question for the Sine space (a random Sine graph).
    Comparison("sine-selection", "ablation of sine-vs-4gates: best of 4 Sine trials > a random Sine graph",
               [("Sine gates", "random Sine graph"), ("four gates", "random Sine graph")],
               [search_job("Sine gates", "ktg-sine-3nodes"),
                search_job("random Sine graph", "ktg-sine-3nodes", trials=1),
                search_job("four gates", "ktg-4gates-3nodes")],
               source="thesis ch. 3", notes="the random graph is trial 0 of the same seed's Sine search, "
               "retrained the same way; other runs shared", ablation_of="sine-vs-4gates"),
]
BY_NAME = {c.name: c for c in COMPARISONS}
CANONICAL = "OMP_NUM_THREADS=1 python scripts/study.py --out study/ --seeds 5 --epochs 10 --jobs 2"
BUDGET_NOTE = ("vanilla cnn_small (seed 1) trained for 12 epochs under the recipe's cosine schedule reached "
               "val 96.2 % at epoch 8, 97.0 % at 10 and 97.2 % at 11-12 (test 96.1 / 96.4 / 97.1), so 5 "
               "epochs (docs/rampup.md) is short of convergence and 10 is within ~0.2 pp of 12; more epochs "
               "would leave fewer rows run on the 2-core machine inside the hour")
MULTI_ARM = {j.name for c in COMPARISONS for j in c.jobs if len(j.arms) > 1}  # one row per arm, wall split


# ---------------------------------------------------------------- running (scripts/study_runner.py)
def run_comparison(comp: Comparison, seeds: list[int], ctx: Ctx, budget: str, csv_path: Path,
                   deadline: float | None = None, log=None) -> str:
    """Runs, in this process, every job of ``comp`` for every seed that
    results.csv lacks; returns the comparison's state: "done" or why not."""
    return run_all([comp], seeds, lambda _: budget, csv_path, [comp, *COMPARISONS], ctx=ctx,
                   deadline=deadline, log=log)[comp.name]


# ---------------------------------------------------------------- the page (scripts/study_page.py)
# What the ablations say, read by hand from the results.csv whose sha256 starts with READ_FOR.
# A rerun with other numbers needs a new reading: the page says when results.csv has changed since.
READ_FOR = "4a5e2f311f59"
READINGS: dict[str, str] = {
    "dml": "DML is level with vanilla (+0.08 pp). Without its ramp-up it is 0.34 pp behind, so the ramp "
           "is worth +0.42 pp on average, but neither interval excludes 0 at 5 seeds. At ~96 % on "
           "MNIST-5k the peer term adds nothing measurable; Zhang et al.'s gains are on CIFAR-100, "
           "which this page does not run.",
    "mixup": "Mixup costs a single cnn_small 0.66 pp too (mixup-single, reversed). So the loss of mixup in DML "
             "is mixup's own cost at a 10-epoch budget, not something between the peers. Superclass mixup "
             "wins it back (+0.58 pp over mixup, holds) and ends level with no mixup.",
    "ensembles": "Pulling the members together (ens-dml) is also level with independent training (+0.14 pp). "
                 "Neither pushing the members apart nor pulling them together moves a 3 x cnn_small "
                 "ensemble on MNIST-5k.",
    "distillation": "Dropping the attention edges makes the per-teacher sum worse, not better (-1.30 pp), so "
                    "attention is not the cause. The scale is: K summed KL terms pull like one KL to the "
                    "teachers' mean probability with weight K (docs/methods.md). With kd_weight 1/3 the sum "
                    "rises from 93.20 +/- 2.54 to 96.22 +/- 0.38 and is +0.08 pp above averaged, with PCGrad "
                    "+0.08 pp above the sum. That is the thesis's order in direction, but no pair is "
                    "resolved at 5 seeds.",
    "ssl": "The views are the cause. With FixMatch's strong view on the student side, Mean Teacher gains "
           "+4.54 pp over its weak-view form (holds) and the Pi-model beats supervised by +3.88 pp (holds). "
           "Mean Teacher with strong views is +1.04 pp over supervised (not resolved). With weak views, "
           "validation picks step 100 for Mean Teacher on 4 of 5 seeds, before the ramp-up reaches full "
           "weight. Two weak draws of an MNIST crop make the consistency target almost the student's own "
           "prediction.",
    "generations": "Twice the epochs for generation 1 leaves the gap as it was (-1.42 pp against -1.38), so "
                   "self-distillation's first generation is not just slower at this budget. Its target is half "
                   "labels and half the model's own training-mode predictions from earlier epochs (Takagi & "
                   "Hattori 2019, eq. 1), and at ~96 % that soft target costs accuracy at both budgets. No "
                   "setting that makes it win was found here.",
    "search-vs-dml": "A search of 4 trials x 2 epochs does not select anything here. Its best graph is level "
                     "with the first graph it drew (+0.08 pp), and DML x3 is +0.20 pp above that random graph "
                     "(not resolved). This row compares a random four-gate graph with DML; the thesis searched "
                     "1,500+ trials at full budget.",
    "sine-vs-4gates": "Random Sine graphs vary far more than random four-gate graphs (test 91.82 +/- 3.73 "
                      "against 95.82 +/- 0.15). The 4-trial search avoids the bad ones on some seeds only "
                      "(+2.38 pp over a random Sine graph, not resolved). At this search size the Sine space's "
                      "spread decides the row; the thesis found its Sine graphs with far larger searches.",
}


def page_spec() -> PageSpec:
    return PageSpec(COMPARISONS, CANONICAL, BUDGET_NOTE, MULTI_ARM, READINGS, READ_FOR)


# ---------------------------------------------------------------- main
def dry_data():
    """mnist5k cut to 256 train / 100 val / 100 test images: every code path in seconds."""
    import torch

    from ktgfast.data import get_dataset
    d = get_dataset("mnist5k")
    g = torch.Generator().manual_seed(0)
    cut = lambda s, n: s.subset(torch.randperm(len(s), generator=g)[:n])  # noqa: E731
    return dataclasses.replace(d, train=cut(d.train, 256), val=cut(d.val, 100), test=cut(d.test, 100))


def budget_name(comp: Comparison, epochs: int, iters: int) -> str:
    return f"{iters} it" if comp.budget == "iterations" else f"{epochs} ep"


def make_ctx(dry: bool, out: str, epochs: int, threads: int, iters: int) -> Ctx:
    """The study's context (in this process, or in each worker of --jobs)."""
    from ktgfast.data import get_dataset
    return Ctx(dry_data() if dry else get_dataset("mnist5k"), Path(out), epochs, threads, dry, iters,
               10 if dry else 100)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="study")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1, the same for every arm")
    ap.add_argument("--rows", default=",".join(BY_NAME), help=f"comma-separated, from: {', '.join(BY_NAME)}")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of every supervised run (cap per generation)")
    ap.add_argument("--ssl-iterations", type=int, default=600)
    ap.add_argument("--max-minutes", type=float, default=None, help="start no new run after this")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per run")
    ap.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 8),
                    help="runs side by side, each in its own process (default: the CPU count, at most 8)")
    ap.add_argument("--page", default=str(ROOT / "docs" / "results.md"))
    ap.add_argument("--page-only", action="store_true", help="rewrite the page from results.csv")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    bad = [r for r in rows if r not in BY_NAME]
    if bad:
        ap.error(f"--rows {','.join(bad)}: unknown; allowed: {', '.join(BY_NAME)}")
    if min(args.seeds, args.epochs, args.ssl_iterations, args.jobs, args.threads) < 1:
        ap.error(f"--seeds {args.seeds} / --epochs {args.epochs} / --ssl-iterations {args.ssl_iterations} / "
                 f"--jobs {args.jobs} / --threads {args.threads}: each must be >= 1")
    args.rows = rows
    return args


def main(argv=None) -> int:
    args = parse(argv)
    import torch
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(2 if args.dry_run else args.seeds))
    epochs, iters = (1, 20) if args.dry_run else (args.epochs, args.ssl_iterations)
    page = out / "results.md" if args.dry_run else Path(args.page)
    csv_path = out / "results.csv"
    status_path = out / "status.json"
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    command = "OMP_NUM_THREADS=1 python scripts/study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.page_only:
        status.setdefault("_invocations", []).append(command)
        status.setdefault("_commits", []).append(machine()["commit"][:12])
        ctx_args = (args.dry_run, str(out), epochs, args.threads, iters)
        deadline = time.time() + 60 * args.max_minutes if args.max_minutes else None
        selected = [BY_NAME[name] for name in args.rows]
        for comp in selected:
            status[comp.name] = "interrupted: the invocation running it stopped before it finished"
        status_path.write_text(json.dumps(status, indent=1))
        t0 = time.time()
        states = run_all(selected, seeds, lambda c: budget_name(c, epochs, iters), csv_path, COMPARISONS,
                         ctx=make_ctx(*ctx_args) if args.jobs == 1 else None, jobs=args.jobs,
                         make_ctx=make_ctx, ctx_args=ctx_args, threads=args.threads, deadline=deadline)
        status.setdefault("_elapsed_min", []).append(round((time.time() - t0) / 60, 1))
        for name, state in states.items():
            status[name] = state if not state.startswith("stopped") else (
                f"the study's time budget (--max-minutes {args.max_minutes:g}) was spent: {state}")
        status_path.write_text(json.dumps(status, indent=1))
    write_page(page_spec(), csv_path, page, page.with_suffix(".png"), command, status, machine(), epochs, iters)
    print(f"page: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
