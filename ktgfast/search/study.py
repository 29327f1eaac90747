"""Graph-structure search: random (or TPE) sampling + ASHA on Optuna.

ASHA is ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)``: every
epoch reports the target node's validation accuracy (the best model node's
with ``score: best``; for semi-supervised graphs an epoch is an evaluation
period), and at epochs 1, 2, 4, … a trial outside the top half of all earlier
evaluations at that rung stops.
A trial's score is its accuracy at its last epoch (completed or stopped).

Honest protocol: trials see a view of the dataset without its test split (the
validation split is carved from the training data); ``retrain`` then trains
the best graph on the full training data and reports test accuracy.

Workers are processes that share the study through its storage.  Each takes
the next trial under a lock file in the study folder, so the number of trials
is exact on one machine (across machines it may overshoot by at most the
number of machines minus one).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import multiprocessing as mp
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from .. import data as kdata  # looked up at each call (a patched ktgfast.data.get_dataset is seen)
from ..data.split import concat_splits
from ..graph import GraphError, validate
from ..models import model_options
from ..train import NonFiniteLossError, TrainConfig, Trainer
from .report import StudyResult, format_table, leaderboard, summary, write_outputs
from .space import SearchSpace, load_space
from .storage import RETRY_OF, describe, open_storage, resolve_url

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
COUNTED = FINISHED + (TrialState.RUNNING,)  # WAITING ones (retries, enqueued) run first


@dataclass
class SearchSettings:
    space: str
    data: str
    trials: int = 40
    epochs: int = 8
    workers: int = 1
    devices: list[str] | None = None
    study: str | None = None
    storage: str | None = None
    out: str = "searches"
    sampler: str = "random"
    seed: int = 0
    val_size: float | None = None  # carve val from train when the dataset has none
    data_root: str | None = None
    config: dict = field(default_factory=dict)  # TrainConfig overrides (batch_size, lr, ...)

    def study_name(self) -> str:
        return self.study or f"{Path(self.space).stem}-{self.data}"

    def study_dir(self) -> Path:
        return Path(self.out) / self.study_name()

    def validate(self) -> "SearchSettings":
        if self.trials < 1:
            raise ValueError(f"--trials {self.trials}: at least one trial")
        if self.epochs < 1:
            raise ValueError(f"--epochs {self.epochs}: at least one epoch")
        if self.workers < 1:
            raise ValueError(f"--workers {self.workers}: at least one worker")
        if self.devices and len(self.devices) < self.workers:
            raise ValueError(f"--devices {','.join(self.devices)} names fewer devices than "
                             f"--workers {self.workers}; one worker runs per device")
        if self.sampler not in ("random", "tpe"):
            raise ValueError(f"--sampler {self.sampler!r}; allowed: random, tpe")
        return self


# ------------------------------------------------------------------ datasets
def search_view(dataset, val_size: float | None, seed: int):
    """The dataset as a search may see it: validation carved from training data
    when there is none, and no test split at all."""
    if dataset.val is None:
        if val_size is None:
            raise ValueError(f"dataset {dataset.name!r} has no validation split: pass --val-size "
                             "(e.g. 10000 for CIFAR's 40k/10k search split)")
        train, val = kdata.carve_validation(dataset.train, val_size, seed)
        dataset = dataclasses.replace(dataset, train=train, val=val)
    return dataclasses.replace(dataset, test=None)


def full_train_view(dataset):
    """Training on all non-test data (train + val) for the final retraining."""
    if dataset.val is None:
        return dataset
    return dataclasses.replace(dataset, train=concat_splits([dataset.train, dataset.val]), val=None)


# ------------------------------------------------------------------ sampling
def make_sampler(kind: str, seed: int):
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2,
                                                  min_early_stopping_rate=0)


def open_study(settings: SearchSettings, sampler_seed: int | None = None) -> optuna.Study:
    url = resolve_url(settings.storage, settings.study_dir())
    storage = open_storage(url, settings.workers)
    seed = settings.seed if sampler_seed is None else sampler_seed
    return optuna.create_study(study_name=settings.study_name(), storage=storage,
                               direction="maximize", load_if_exists=True,
                               sampler=make_sampler(settings.sampler, seed), pruner=make_pruner())


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards the budget: finished or running, except dead
    workers' failures that were retried as new trials."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get(RETRY_OF) for t in trials} - {None}
    return sum(1 for t in trials if t.state in COUNTED
               and not (t.state == TrialState.FAIL and t.number in retried))


@contextlib.contextmanager
def study_lock(study_dir: Path):
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _heartbeat(trial: optuna.Trial, study: optuna.Study):
    # Optuna starts heartbeats only inside study.optimize; the ask/tell loop
    # (needed for an exact trial count) starts it itself.
    try:
        from optuna.storages._heartbeat import get_heartbeat_thread
    except ImportError:  # pragma: no cover - future Optuna
        return contextlib.nullcontext()
    return get_heartbeat_thread(trial._trial_id, study._storage)


# ----------------------------------------------------------------- objective
class Objective:
    """Trains one sampled graph; reports validation accuracy every epoch."""

    def __init__(self, settings: SearchSettings, space: SearchSpace, dataset, device: str):
        self.settings, self.space, self.dataset, self.device = settings, space, dataset, device

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.settings
        graph = self.space.sample(trial, self.dataset.name)
        graph.name = f"trial{trial.number}"
        trial.set_user_attr("graph", graph.to_dict())
        trial.set_user_attr("graph_key", graph.digest(16))
        try:
            validate(graph, model_options)
        except GraphError as exc:  # rejected before any model is built
            trial.set_user_attr("rejected", str(exc))
            raise optuna.TrialPruned(f"rejected: {exc}") from None
        for other in trial.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
            if other.number == trial.number or other.user_attrs.get("graph_key") != graph.digest(16):
                continue
            if "rejected" in other.user_attrs or "duplicate_of" in other.user_attrs:
                continue
            # Not trained twice: a completed twin lends its score; a pruned or
            # still running twin makes this one a no-op (it reports nothing, so
            # ASHA's rung records are not counted twice).
            trial.set_user_attr("duplicate_of", other.number)
            if other.state == TrialState.COMPLETE:
                return other.value
            raise optuna.TrialPruned(f"duplicate of trial {other.number}")
        cfg = TrainConfig().merged({
            **s.config, "epochs": s.epochs, "eval_splits": ["val"], "device": self.device,
            "seed": s.seed + trial.number, "checkpoint": False, "tensorboard": False,
            "verbose": False, "progress_bar": False,
            "out": str(s.study_dir() / "trials" / f"{trial.number:05d}")})
        trainer = Trainer(graph, self.dataset, cfg)  # semi-supervised graphs: the ssl trainer
        acc = 0.0
        for epoch in range(1, s.epochs + 1):
            row = trainer.train_epoch()
            acc = self.space.score_of(row, graph)
            trial.report(acc, epoch)
            # The last epoch is the trial's result, not a rung to stop at.
            if epoch < s.epochs and trial.should_prune():
                trial.set_user_attr("stopped_at", epoch)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} with {acc:.2f}%")
        return acc


def run_worker(settings: SearchSettings, index: int, device: str, threads: int | None) -> int:
    """One worker: take trials until the study has ``settings.trials``."""
    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(settings.space)
    data = kdata.get_dataset(settings.data, root=settings.data_root, seed=0)
    view = search_view(data, settings.val_size, settings.seed)
    # Each worker samples its own stream: distinct seeds per worker and per
    # resume (the trials already in the study shift it), reproducible otherwise.
    study = open_study(settings)
    study.sampler = make_sampler(settings.sampler,
                                 settings.seed * 1000 + index + 7919 * counted_trials(study))
    objective = Objective(settings, space, view, device)
    try:  # PostgreSQL: heartbeats on; the journal: none (recovered on resume)
        from optuna.storages._heartbeat import is_heartbeat_enabled

        heartbeat = is_heartbeat_enabled(study._storage)
    except ImportError:  # pragma: no cover - future Optuna
        heartbeat = False
    done = 0
    while True:
        with study_lock(settings.study_dir()):
            if heartbeat:  # fail (and queue retries of) dead workers' trials
                optuna.storages.fail_stale_trials(study)
            if counted_trials(study) >= settings.trials:
                return done
            trial = study.ask()
        with _heartbeat(trial, study):
            try:
                value = objective(trial)
                study.tell(trial, value)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
            except NonFiniteLossError as exc:
                trial.set_user_attr("error", str(exc))
                study.tell(trial, state=TrialState.FAIL)
            except BaseException as exc:  # a crash: record it, never leave RUNNING
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                study.tell(trial, state=TrialState.FAIL)
                raise
        done += 1


def _worker_entry(settings_dict: dict, index: int, device: str, threads: int | None) -> None:
    run_worker(SearchSettings(**settings_dict), index, device, threads)


def recover_stale(study: optuna.Study, url: str) -> int:
    """Before local workers start, RUNNING trials in a journal are leftovers of a
    killed run: mark them FAIL (PostgreSQL does this by heartbeat)."""
    if not url.startswith("journal:"):
        optuna.storages.fail_stale_trials(study)
        return 0
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, "error", "worker died (recovered on resume)")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(stale)


def _check_study_settings(study: optuna.Study, settings: SearchSettings) -> None:
    """A resumed study must search the same space on the same data."""
    key = {"space": Path(settings.space).stem, "data": settings.data, "epochs": settings.epochs}
    old = study.user_attrs.get("settings")
    if old is None:
        study.set_user_attr("settings", key)
    elif old != key:
        raise ValueError(f"study {settings.study_name()!r} was created with {old}; this call asks "
                         f"for {key}. Use another --study name or the same settings")


def _check_study_folder(study: optuna.Study, settings: SearchSettings) -> None:
    """A study new to its storage never writes into a study folder that holds
    another study's results (trial run folders): they would mix.  The same
    name on the same storage resumes (the study then has its settings)."""
    if study.user_attrs.get("settings") is not None or study.get_trials(deepcopy=False):
        return
    trials = settings.study_dir() / "trials"
    held = sorted(p.name for p in trials.iterdir()) if trials.is_dir() else []
    if held:
        raise ValueError(f"study folder {str(settings.study_dir())!r} holds the results of another study "
                         f"({len(held)} trial folders in trials/) but study {settings.study_name()!r} is new "
                         f"in {describe(resolve_url(settings.storage, settings.study_dir()))}; resume with "
                         "the storage that holds it (--storage), or choose another --study or --out")


def search(space: str, data: str, **kwargs) -> StudyResult:
    """Run (or resume) a search; returns the leaderboard's summary.

    ``ktgfast.search.search("ktg-4gates-3nodes", "mnist5k", trials=40, epochs=8, workers=2)``
    """
    settings = SearchSettings(space=space, data=data, **kwargs).validate()
    load_space(settings.space)  # fail early on a bad space
    search_view(kdata.get_dataset(settings.data, root=settings.data_root, seed=0), settings.val_size,
                settings.seed)  # fail early on bad data / missing val split
    TrainConfig().merged(settings.config)  # fail early on bad overrides
    url = resolve_url(settings.storage, settings.study_dir())
    study = open_study(settings)
    _check_study_folder(study, settings)
    _check_study_settings(study, settings)
    recovered = recover_stale(study, url)
    settings.study_dir().mkdir(parents=True, exist_ok=True)
    (settings.study_dir() / "settings.json").write_text(json.dumps(dataclasses.asdict(settings), indent=1))
    before = counted_trials(study)
    print(f"study {settings.study_name()!r} in {describe(url)}: {before}/{settings.trials} trials "
          f"done{f', {recovered} stale trials marked FAIL' if recovered else ''}; "
          f"{settings.workers} worker(s)", flush=True)
    t0 = time.perf_counter()
    if before < settings.trials:
        _run_workers(settings)
    wall = time.perf_counter() - t0
    result = write_outputs(open_study(settings), settings)
    result.wall_s = wall
    return result


def _device_name(d: str) -> str:
    return f"cuda:{d}" if d.isdigit() else d


def _run_workers(settings: SearchSettings) -> None:
    devices = [_device_name(d) for d in settings.devices] if settings.devices else ["cpu"] * settings.workers
    cpu = all(d == "cpu" for d in devices)
    threads = max(1, (os.cpu_count() or 1) // settings.workers) if cpu else None
    if settings.workers == 1:
        run_worker(settings, 0, devices[0], threads)
        return
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_entry, args=(dataclasses.asdict(settings), i, devices[i], threads),
                         name=f"ktgfast-search-{i}") for i in range(settings.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    bad = [p.name for p in procs if p.exitcode not in (0, None)]
    if bad:
        print(f"warning: worker(s) {', '.join(bad)} exited abnormally; finished trials are kept, "
              "rerun the same command to complete the study", flush=True)


def retrain(result: StudyResult, settings: SearchSettings, seeds: int = 1,
            epochs: int | None = None) -> dict:
    """Train the best graph on all training data (train + val) and report the
    target's test accuracy, mean ± std over ``seeds`` runs.  The only place
    a search touches the test split, after the choice is made."""
    if result.best_graph is None:
        raise ValueError(f"study {result.study_name!r} has no scored trial to retrain")
    data = full_train_view(kdata.get_dataset(settings.data, root=settings.data_root, seed=0))
    accs = []
    target = result.best_graph.target_name
    for i in range(seeds):
        cfg = TrainConfig().merged({
            **settings.config, "epochs": epochs or settings.epochs, "eval_splits": ["test"],
            "seed": settings.seed + i, "tensorboard": False, "verbose": False,
            "out": str(settings.study_dir() / "retrain" / f"seed{i}")})
        # A second --retrain replaces the first one's seed folders (as it replaces retrain.json).
        row = Trainer(result.best_graph, data, cfg, overwrite=True).fit()
        accs.append(row[f"test_acc:{target}"])
        print(f"retrain seed {i}: test accuracy of {target} {accs[-1]:.2f}%", flush=True)
    out = {"seeds": seeds, "test_acc": accs, "mean": statistics.fmean(accs),
           "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "target": target,
           "graph_key": result.best_graph.digest(16)}
    (settings.study_dir() / "retrain.json").write_text(json.dumps(out, indent=1))
    print(f"retrained best graph: test accuracy {out['mean']:.2f} ± {out['std']:.2f}% "
          f"over {seeds} seed(s)", flush=True)
    result.retrain = out
    return out


def status(study_name: str, out: str = "searches", storage: str | None = None) -> dict:
    """Print and return the state of a running or finished study."""
    settings = SearchSettings(space=study_name, data="", study=study_name, out=out, storage=storage)
    saved = settings.study_dir() / "settings.json"
    if storage is None and not saved.exists():
        raise ValueError(f"no study {study_name!r} under {out!r} (looked for {saved}); "
                         "pass --out or --storage")
    if saved.exists() and storage is None:
        settings.storage = json.loads(saved.read_text()).get("storage")
    url = resolve_url(settings.storage, settings.study_dir())
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    except KeyError:
        raise ValueError(f"storage {describe(url)} has no study {study_name!r}") from None
    s = summary(study)
    rows = leaderboard(study)
    print(format_table(rows))
    print(" ".join(f"{k}={v}" for k, v in s.items()))
    return {"summary": s, "leaderboard": rows}
