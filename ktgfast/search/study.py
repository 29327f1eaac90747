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
the next trial under a lock file beside the storage (``storage.study_lock``),
so the number of trials is exact on one machine (across machines it may
overshoot by at most the number of machines minus one).

``--trials N`` is the study's budget, not one command's: a command runs trials
until the study holds N (finished or running, retried dead ones not counted).
A second command on a live journal or PostgreSQL study joins it as more
workers and runs only what is left; on SQLite (one worker at a time) it is
refused.  A trial whose worker died (``storage.why_dead``: its lease is free,
or its PostgreSQL heartbeat is stale) is failed and queued again, by any
worker before it asks for a trial and by every command before it ends, so a
command never ends with a RUNNING trial that has no worker.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing as mp
import os
import signal
import statistics
import time
import warnings
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
from ..train.checkpoint import atomic_write_text
from . import storage as kstorage
from .report import StudyResult, format_table, leaderboard, score, summary, write_outputs
from .space import SearchSpace, load_space
from .storage import (RETRY_OF, WORKER, WorkerLease, check_url, describe, kind_of, live_leases,
                      open_storage, remove_dead_leases, resolve_url, retry_dead_trial,
                      stale_heartbeats, study_lock, why_dead, workers_dir)

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


def study_url(settings: SearchSettings) -> str:
    return resolve_url(settings.storage, settings.study_dir())


def lease_dir(settings: SearchSettings) -> Path:
    """Where this study's local workers keep their leases and their lock."""
    return workers_dir(study_url(settings), settings.study_dir()) or settings.study_dir() / "workers"


def recover_dead(study: optuna.Study, url: str, study_dir: Path | None = None) -> list[tuple]:
    """Fail every RUNNING trial whose worker is gone (``storage.why_dead``) and
    queue it again; ``[(number, why, retry chain or None), ...]``.  Call under
    ``study_lock`` of the storage's workers folder."""
    kind = kind_of(url)
    folder = workers_dir(url, study_dir)
    stale = stale_heartbeats(study)
    found = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = why_dead(t, kind, folder, stale)
        if why is None:
            continue
        try:  # another machine may fail it first (PostgreSQL): only the winner retries
            study._storage.set_trial_user_attr(t._trial_id, "error", f"worker gone: {why}")
            if not study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        found.append((t.number, why, retry_dead_trial(study, t)))
    remove_dead_leases(folder)
    return found


def recover_stale(study: optuna.Study, url: str, study_dir: Path | None = None) -> int:
    """:func:`recover_dead` under the lock; the number of trials recovered."""
    folder = workers_dir(url, study_dir)
    with study_lock(folder) if folder is not None else contextlib.nullcontext():
        return len(recover_dead(study, url, study_dir))


def _say_recovered(found: list[tuple], when: str) -> None:
    for number, why, chain in found:
        again = "queued again" if chain else f"not retried (retried {kstorage.MAX_RETRY} times already)"
        print(f"trial {number}: RUNNING but {why} ({when}); marked FAIL, {again}", flush=True)


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
            # Only an earlier trial is a twin: two workers sampling one graph at
            # once would otherwise each call the other the twin, and neither trains.
            if other.number >= trial.number or other.user_attrs.get("graph_key") != graph.digest(16):
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
    # We start the heartbeat ourselves (_heartbeat), so ask() warns for nothing.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    space = load_space(settings.space)
    data = kdata.get_dataset(settings.data, root=settings.data_root, seed=0)
    view = search_view(data, settings.val_size, settings.seed)
    # Each worker samples its own stream: distinct seeds per worker and per
    # resume (the trials already in the study shift it), reproducible otherwise.
    study = open_study(settings)
    study.sampler = make_sampler(settings.sampler,
                                 settings.seed * 1000 + index + 7919 * counted_trials(study))
    objective = Objective(settings, space, view, device)
    url, folder = study_url(settings), lease_dir(settings)
    done = 0
    with WorkerLease(folder) as lease:
        while True:
            with study_lock(folder):
                _say_recovered(recover_dead(study, url, settings.study_dir()), "found by a worker")
                if counted_trials(study) >= settings.trials:
                    return done
                trial = study.ask()
                # Recorded under the lock: whoever judges workers sees it or the ask.
                study._storage.set_trial_system_attr(trial._trial_id, WORKER, lease.record())
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
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        # Stopped by its user, not failed by its graph: it does
                        # not use up the budget; the next command runs it again.
                        retry_dead_trial(study, study._storage.get_trial(trial._trial_id))
                    raise
            done += 1
            print(trial_line(study, trial.number, settings.trials,
                             max(settings.workers, len(live_leases(folder)))), flush=True)


def _worker_entry(settings_dict: dict, index: int, device: str, threads: int | None) -> None:
    run_worker(SearchSettings(**settings_dict), index, device, threads)


# ------------------------------------------------------------------ talking
def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def _outcome(t) -> str:
    a, sc = t.user_attrs, score(t)
    if "rejected" in a:
        return f"rejected ({a['rejected']})"
    if "duplicate_of" in a:
        twin = f"duplicate of trial {a['duplicate_of']}"
        return f"{sc:.2f}% {twin}" if t.state == TrialState.COMPLETE else f"{twin} (not trained)"
    if t.state == TrialState.FAIL:
        return f"FAILED ({a.get('error', 'no error recorded')})"
    if t.state == TrialState.PRUNED:
        epoch = a.get("stopped_at", t.last_step)
        rung = int(math.log2(epoch)) if epoch else 0
        return f"{sc:.2f}% pruned at rung {rung} (epoch {epoch})"
    return f"{sc:.2f}% complete ({t.last_step} epochs)"


def trial_line(study: optuna.Study, number: int, budget: int, workers: int) -> str:
    """One finished trial: number, graph digest, score and where it stopped,
    the running best, and an ETA (the mean wall time of finished trials times
    the trials left of the budget, over the live workers)."""
    trials = study.get_trials(deepcopy=False)
    t = trials[number]
    scored = [x for x in trials if x.state in (TrialState.COMPLETE, TrialState.PRUNED)
              and score(x) is not None]
    best = max(scored, key=lambda x: (score(x), -x.number), default=None)
    retried = {x.system_attrs.get(RETRY_OF) for x in trials} - {None}
    finished = [x for x in trials if x.state in FINISHED
                and not (x.state == TrialState.FAIL and x.number in retried)]
    walls = [x.duration.total_seconds() for x in finished if x.duration is not None]
    left = max(budget - len(finished), 0)
    eta = "done" if not left else (f"ETA {_duration(left * statistics.fmean(walls) / max(workers, 1))}"
                                   if walls else "ETA unknown")
    head = f"trial {number} {t.user_attrs.get('graph_key', '-')}: {_outcome(t)}"
    top = f"best {score(best):.2f}% (trial {best.number})" if best is not None else "best -"
    return f"{head} | {top} | {len(finished)}/{budget} finished, {eta}"


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
    """Run (or resume, or join) a search; returns the leaderboard's summary.

    ``ktgfast.search.search("ktg-4gates-3nodes", "mnist5k", trials=40, epochs=8, workers=2)``
    """
    settings = SearchSettings(space=space, data=data, **kwargs).validate()
    url = study_url(settings)
    kind = check_url(url, settings.workers)  # a bad URL is refused before the data is read
    load_space(settings.space)  # fail early on a bad space
    search_view(kdata.get_dataset(settings.data, root=settings.data_root, seed=0), settings.val_size,
                settings.seed)  # fail early on bad data / missing val split
    TrainConfig().merged(settings.config)  # fail early on bad overrides
    study = open_study(settings)  # creates the journal / connects: refused here if it cannot
    _check_study_folder(study, settings)
    _check_study_settings(study, settings)
    folder = lease_dir(settings)
    with study_lock(folder):
        others = live_leases(folder)
        if others and not kind.joinable:
            raise ValueError(
                f"study {settings.study_name()!r} in {describe(url)} is being searched by "
                f"{len(others)} live worker(s) ({', '.join(others)}); {kind.name} allows one worker at "
                "a time: wait for it to finish, or search side by side on the default journal "
                "(omit --storage) or postgresql://...")
        recovered = recover_dead(study, url, settings.study_dir())
        atomic_write_text(json.dumps(dataclasses.asdict(settings), indent=1),
                          settings.study_dir() / "settings.json")
        trials = study.get_trials(deepcopy=False)
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        before = counted_trials(study)
    _say_recovered(recovered, "left by an earlier command")
    joined = (f"; joining {len(others)} live worker(s) running trial(s) "
              f"{', '.join(map(str, running)) or 'none yet'}" if others else "")
    left = max(settings.trials - before, 0)
    print(f"study {settings.study_name()!r} in {describe(url)}: {before - len(running)}/{settings.trials} "
          f"trials done{joined}; this command runs {left} more (--trials counts the whole study) "
          f"with {settings.workers} worker(s)", flush=True)
    t0 = time.perf_counter()
    for _ in range(kstorage.MAX_RETRY + 1):  # retries of dead workers' trials may need another round
        left = settings.trials - counted_trials(study)
        if left > 0:  # no more workers than trials left (a retry round usually needs one)
            _run_workers(dataclasses.replace(settings, workers=min(settings.workers, left)),
                         offset=len(others))
        with study_lock(folder):
            found = recover_dead(study, url, settings.study_dir())
        _say_recovered(found, "found at the end of this command")
        if not found:
            break
    wall = time.perf_counter() - t0
    with study_lock(folder):  # two commands ending together write the outputs in turn
        final = open_study(settings)
        result = write_outputs(final, settings)
        live = [t.number for t in final.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if live:
        print(f"trial(s) {', '.join(map(str, live))} still running in live workers of another command; "
              "the study is complete when they finish", flush=True)
    result.wall_s = wall
    result.ran = max(counted_trials(final) - before, 0)
    return result


def _device_name(d: str) -> str:
    return f"cuda:{d}" if d.isdigit() else d


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _run_workers(settings: SearchSettings, offset: int = 0) -> None:
    """This command's workers; ``offset`` (live workers of other commands)
    shifts their indices, hence their samplers' seeds."""
    devices = [_device_name(d) for d in settings.devices] if settings.devices else ["cpu"] * settings.workers
    cpu = all(d == "cpu" for d in devices)
    threads = max(1, (os.cpu_count() or 1) // settings.workers) if cpu else None
    if settings.workers == 1:
        run_worker(settings, offset, devices[0], threads)
        return
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_entry,
                         args=(dataclasses.asdict(settings), offset + i, devices[i], threads),
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
    bad = [f"{p.name} ({_exit_reason(p.exitcode)})" for p in procs if p.exitcode not in (0, None)]
    if bad:
        print(f"warning: worker(s) {', '.join(bad)} exited abnormally; finished trials are kept and "
              "trials left RUNNING are failed and queued again", flush=True)


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
    """Print and return the state of a running or finished study.  A RUNNING
    trial whose worker is gone (lease free, heartbeat stale) is shown as
    ORPHANED, with why, and counted in ``orphaned``, not in ``running``."""
    settings = SearchSettings(space=study_name, data="", study=study_name, out=out, storage=storage)
    saved = settings.study_dir() / "settings.json"
    if storage is None and not saved.exists():
        raise ValueError(f"no study {study_name!r} under {out!r} (looked for {saved}); "
                         "pass --out or --storage")
    if saved.exists() and storage is None:
        settings.storage = json.loads(saved.read_text()).get("storage")
    url = study_url(settings)
    kind = check_url(url)
    if kind.name == "journal" and not kstorage.journal_path(url).exists():
        raise ValueError(f"storage {describe(url)!r}: no such journal file, so no study "
                         f"{study_name!r}; pass the --storage the search used")
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    except KeyError:
        raise ValueError(f"storage {describe(url)} has no study {study_name!r}") from None
    folder = workers_dir(url, settings.study_dir())
    locked = study_lock(folder) if folder is not None and folder.is_dir() else contextlib.nullcontext()
    with locked:  # judged as the workers judge (an ask and its record are one step)
        stale = stale_heartbeats(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        gone = {t.number: why_dead(t, kind, folder, stale) for t in running}
    s = summary(study)
    rows = leaderboard(study)
    orphaned = sum(why is not None for why in gone.values())
    s = {**{k: v for k, v in s.items() if k != "duplicates"}, "running": s["running"] - orphaned,
         "orphaned": orphaned, "duplicates": s["duplicates"]}
    for r in rows:
        if gone.get(r["number"]):
            r["state"] = "ORPHANED"
    print(format_table(rows))
    for t in running:
        rec = t.system_attrs.get(WORKER)
        where = f" (process {rec['pid']} on {rec['host']})" if rec else ""
        if gone[t.number]:
            print(f"trial {t.number}: ORPHANED, RUNNING in the storage but {gone[t.number]}; the next "
                  "`ktgfast search` on this study fails it and queues it again")
        else:
            print(f"trial {t.number}: running{where}, at epoch {t.last_step or 0}")
    print(" ".join(f"{k}={v}" for k, v in s.items()))
    return {"summary": s, "leaderboard": rows, "orphaned": {n: w for n, w in gone.items() if w}}
