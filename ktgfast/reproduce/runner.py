"""Train the rows of a recipe through the public API and record them.

For every (row, seed): the run folder ``<out>/<recipe>/<row>/seed<k>`` (under
``<out>/dry-run/`` for ``--dry-run``), a ``TrainConfig`` = the recipe's
training fields < the row's < the run's (seed, out, device), then
``ktgfast.train.methods.trainer_class(method)`` (or ``Distiller`` for
distillation rows) and ``fit()``.  The trainer's run-folder rules apply
unchanged: a folder with a checkpoint is resumed (a finished run returns its
result without training), any other folder holding run files is refused.  A
run whose lines are already in the results table is skipped.

``--dry-run`` keeps each row's graph, models, method and data *shape*
(channels, image size, classes, superclasses) and replaces the data by a few
synthetic images (``ktgfast.data``'s ``synthetic`` dataset) and the budget by
a few steps (``dry_steps``): it checks that every row builds and trains, not how well.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..train import TrainConfig
from .data import SOURCES
from .recipe import TARGET, Recipe, Row
from .results import ResultsTable, format_summary, summarize

DRY_STEPS = 2          # optimizer steps per row (per generation for self-distillation) ...
DRY_STEPS_LARGE = 1    # ... and for images larger than 64 px (224 px ABN-ResNet-18s cost seconds a step on a CPU)
DRY_GENERATIONS = 2    # enough to exercise the teacher of generation 2


@dataclass
class RunOptions:
    out: Path
    dry_run: bool = False
    data_root: str | None = None
    download: bool = False
    device: str = "auto"
    seeds: tuple[int, ...] | None = None     # None: the recipe's
    rows: list[str] | None = None            # None: every row
    graphs: dict[str, str] = field(default_factory=dict)  # row -> graph YAML replacing the row's
    teachers: str | None = None              # a trained teacher run for distillation rows
    verbose: bool = True

    @property
    def mode(self) -> str:
        return "dry-run" if self.dry_run else "full"

    @property
    def root(self) -> Path:
        """Where the run folders go (absolute: the results table names them)."""
        out = Path(self.out).resolve()
        return out / "dry-run" if self.dry_run else out


def _is_ssl(recipe: Recipe) -> bool:
    return any(r.method == "ssl" for r in recipe.rows)


def _dry_batch(recipe: Recipe) -> int:
    src = SOURCES[recipe.dataset]
    return min(recipe.train.get("batch_size", 64), 2)  # BatchNorm needs 2 samples


def dry_steps(recipe: Recipe) -> int:
    return DRY_STEPS if SOURCES[recipe.dataset].image_size <= 64 else DRY_STEPS_LARGE


def dry_fields(recipe: Recipe, row: Row) -> dict:
    """TrainConfig fields that shrink a row to ``dry_steps`` steps of a tiny batch.
    Large-image rows write no checkpoint (hundreds of MB for four ABN-ResNet-18s),
    except a teacher, whose checkpoint the distillation rows read."""
    b, steps = _dry_batch(recipe), dry_steps(recipe)
    out = dict(batch_size=b, epochs=1, milestones=None, eval_batch_size=64, tensorboard=False,
               progress_bar=False, log_every=1,
               checkpoint=SOURCES[recipe.dataset].image_size <= 64 or row is recipe.teacher)
    if recipe.train.get("val_size") is not None:
        out["val_size"] = b
    if row.method == "ssl":
        # one labelled image per class; a labelled batch of 16 keeps the pretraining of a
        # frozen node (one pass over the labelled set, thesis §5.2.3) to a few steps
        out.update(iterations=steps, eval_every=steps, labels_per_class=1, unlabeled_batch_size=4,
                   batch_size=min(recipe.train.get("batch_size", 64), 16, SOURCES[recipe.dataset].num_classes))
    if row.method in ("self-distill", "ban"):
        g = min(recipe.train.get("generations", 3), DRY_GENERATIONS)
        out.update(generations=g, max_epochs_per_generation=1, epochs=g)
    return out


def load_data(recipe: Recipe, opts: RunOptions):
    src = SOURCES[recipe.dataset]
    if not opts.dry_run:
        return src.load(opts.data_root, opts.download, recipe.train.get("val_size"))
    b = _dry_batch(recipe)
    if _is_ssl(recipe):  # one labelled image per class, the rest unlabelled
        n_train = 2 * src.num_classes
    else:
        n_train = dry_steps(recipe) * b
    return src.synthetic(n_train=n_train, n_test=b, val=b if recipe.train.get("val_size") else None)


def metrics_of(result: dict, method: str) -> dict[str, float]:
    """The numbers of a finished run: every ``test_acc:NODE``, plus
    ``test_acc:node_mean`` (the mean of the model nodes, table 4.6's node
    column) and ``test_acc:best`` (the best model node, the score of the
    thesis's FixMatch space) when there are several nodes; for generations
    ``test_acc:gen<k>`` of each generation's best-validation weights."""
    if method in ("self-distill", "ban"):
        out = {}
        for g in result.get("generations", []):
            out[f"test_acc:gen{g['generation']}"] = float(g["test_acc"])
        return out
    out = {k: float(v) for k, v in result.items() if k.startswith("test_acc:")}
    nodes = [v for k, v in out.items() if k != "test_acc:ensemble"]
    if len(nodes) > 1:
        out["test_acc:node_mean"] = statistics.fmean(nodes)
        out["test_acc:best"] = max(nodes)
    return out


def _config(recipe: Recipe, row: Row, seed: int, run_dir: Path, opts: RunOptions) -> TrainConfig:
    fields_ = {**recipe.train, **row.config}
    if opts.dry_run:
        fields_.update(dry_fields(recipe, row))
    fields_.update(seed=seed, out=str(run_dir), device=opts.device, data_root=opts.data_root,
                   download=opts.download, verbose=opts.verbose)
    if opts.dry_run:  # never the user's cache of pretrained teachers
        fields_["pretrain_cache"] = str(opts.root / "pretrained")
    return TrainConfig.from_dict(fields_, where=f"recipe {recipe.name}, row {row.name}")


def _trainer(row: Row, data, cfg: TrainConfig, resume: bool, teachers: str | None):
    if row.method == "distill":
        from ..train.distill import DistillSettings, Distiller

        return Distiller(DistillSettings(teachers=teachers, **row.distill), data, cfg, resume=resume)
    from ..train.methods import trainer_class

    return trainer_class(row.method)(row.graph_ref, data, cfg, resume=resume, graph_params=dict(row.graph_args))


def _paper_key(key: str, trainer) -> str:
    return f"test_acc:{trainer.graph.target_name}" if key == TARGET else key


def run_dir_of(recipe: Recipe, row: Row, seed: int, opts: RunOptions) -> Path:
    return opts.root / recipe.name / row.name / f"seed{seed}"


def run_row(recipe: Recipe, row: Row, seed: int, data, opts: RunOptions, table: ResultsTable,
            teachers: str | None = None) -> Path:
    """Train one (row, seed), print ours beside the paper's, append the lines;
    returns the run folder."""
    run_dir = run_dir_of(recipe, row, seed, opts)
    where = f"{recipe.name} / {row.name} / seed {seed}"
    if table.recorded(run_dir):
        print(f"{where}: already in {table.path}; skipped", flush=True)
        return run_dir
    cfg = _config(recipe, row, seed, run_dir, opts)
    resume = (run_dir / "checkpoint.pt").exists()
    t0 = time.perf_counter()
    trainer = _trainer(row, data, cfg, resume, teachers)
    result = trainer.fit()
    wall = time.perf_counter() - t0
    ours = metrics_of(result, row.method)
    # a distillation row's knowledge is its teachers': their graph's source is the row's
    source = row.source if row.method != "distill" else \
        (f"teachers {recipe.teacher.source}" if teachers == str(run_dir_of(recipe, recipe.teacher, 0, opts))
         else "teachers user")
    paper = {_paper_key(k, trainer): p for k, p in row.paper.items()}
    lines = []
    for metric, value in ours.items():
        p = paper.get(metric)
        lines.append(dict(recipe=recipe.name, row=row.name, label=row.label, seed=seed, metric=metric,
                          ours=value, paper=None if p is None else p.mean,
                          paper_std=None if p is None else p.std, wall_s=round(wall, 1),
                          graph_source=source, graph=row.graph or row.method, method=row.method,
                          mode=opts.mode, run_dir=str(run_dir)))
    missing = sorted(set(paper) - set(ours))
    if missing:
        raise RuntimeError(f"{where}: the run reports no {', '.join(missing)} (it has "
                           f"{', '.join(ours)}); the recipe's row names a metric this graph lacks")
    table.append(lines)
    shown = [f"{m} ours {ours[m]:.2f} | paper {p}" for m, p in paper.items()] or \
            [f"{m} ours {v:.2f}" for m, v in ours.items()]
    tail = "" if paper else f" | paper: {row.note or 'no number'}"
    print(f"{where} ({source} graph, {wall:.1f} s): " + "; ".join(shown) + tail, flush=True)
    return run_dir


def run_recipe(recipe: Recipe, opts: RunOptions) -> list[dict]:
    """Every selected row x seed of ``recipe``; returns the summary groups."""
    rows = recipe.select(opts.rows)
    for name, path in opts.graphs.items():
        recipe.row(name)
        if not Path(path).is_file():
            raise ValueError(f"--graph {name}={path}: no such graph file")
    rows = [r.with_graph(opts.graphs[r.name]) if r.name in opts.graphs else r for r in rows]
    seeds = tuple(opts.seeds) if opts.seeds is not None else recipe.seeds
    table = ResultsTable(opts.out)
    data = load_data(recipe, opts)
    teachers = opts.teachers
    if any(r.method == "distill" for r in rows) and teachers is None:
        teachers = str(run_row(recipe, recipe.teacher, 0, data, opts, table))
    elif teachers is not None and not Path(teachers).is_dir():
        raise ValueError(f"--teachers {teachers}: not a run folder")
    for row in rows:
        for seed in seeds:
            run_row(recipe, row, seed, data, opts, table, teachers)
    groups = summarize(table.rows(), recipe.name, opts.mode)
    wanted = {r.name for r in rows} | ({"teacher"} if recipe.teacher is not None else set())
    groups = [g for g in groups if g["row"] in wanted]
    print(f"\n{recipe.name}: {recipe.paper} ({opts.mode}; results in {table.path})")
    print(format_summary(groups))
    return groups


__all__ = ["DRY_STEPS", "RunOptions", "dry_fields", "load_data", "metrics_of", "run_recipe", "run_row"]
