"""Helpers of tests/test_search.py that must also run in child processes.

Importing this module registers ``tinysyn``: the ``synthetic`` data made tiny
(256 train / 64 test grey 28x28 images, 4 classes).  A search reads its data by
name only, so the tests need a registered name; 28 px is the ``mlp`` model's
default input size, and search spaces cannot pass model options.

Run as a script it is the ``__main__`` of a child process (the module is then
re-imported by every ``spawn`` worker as ``__mp_main__``, so they see
``tinysyn`` too):

    python tests/support/search.py cli search --data tinysyn ...   # ktgfast's CLI
    python tests/support/search.py search '{"space": ..., ...}'    # ktgfast.search.search(**json)
    python tests/support/search.py asha '{"journal": ..., ...}'    # the fake ASHA driver

Test-only knobs read from the environment in such a child (monkeypatches of
module attributes, no source file is touched).  They make a test wait for
events, never for a guessed time:

- ``KTGFAST_TEST_HANG=PATH``: the first process of the run to reach the
  first training epoch of a trial (claimed through ``PATH.claim``, so with
  several workers exactly one) writes its pid to ``PATH.pid``, then the
  trial's folder name (``00003``) to PATH, then blocks until it is killed (a
  worker reliably killed mid-trial); the other processes go on;
- ``KTGFAST_TEST_PAUSE=PATH``: at the first training epoch of a trial this
  process writes its pid to ``PATH.pid`` and the trial's folder name to PATH,
  then waits until ``PATH.go`` exists (a live worker held inside a trial);
- ``KTGFAST_TEST_AWAIT=PATH``: before the first training epoch of a trial this
  process waits until PATH exists (so it is inside a trial while another
  process reaches its own ``KTGFAST_TEST_HANG``);
- ``KTGFAST_TEST_DONE=DIR``: every search worker writes ``DIR/done-PID`` when
  it returns or raises (a test knows it has ended);
- ``KTGFAST_TEST_BARRIER=DIR:N``: every search worker (process) of the run
  signs in to DIR at the first training epoch of a trial, or when it ends,
  whichever comes first, and then waits until N have signed in: with N workers
  at least two trials provably run side by side;
- ``KTGFAST_TEST_HEARTBEAT_S`` / ``KTGFAST_TEST_GRACE_S`` override
  ``ktgfast.search.storage.HEARTBEAT_S`` / ``GRACE_S``;

and search workers always use one intra-op thread.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve()
if __name__ in ("__main__", "__mp_main__") and str(HERE.parents[1]) not in sys.path:
    sys.path.insert(0, str(HERE.parents[1]))  # run as a script: ``support`` from tests/

from ktgfast.data import DATASETS, get_dataset, register_dataset  # noqa: E402
from support.wait import wait_for, write_atomic  # noqa: E402

TINY = "tinysyn"
TINY_CONFIG = {"batch_size": 64, "lr": 0.05, "schedule": "constant", "augment": "none",
               "eval_batch_size": 256}
TINY_SET = [f"{k}={v}" for k, v in TINY_CONFIG.items()]


def _tinysyn(root, download, seed, *, n_train: int = 256, n_test: int = 64, num_classes: int = 4,
             channels: int = 1, image_size: int = 28, noise: float = 110.0):
    ds = get_dataset("synthetic", seed=seed, n_train=n_train, n_test=n_test, num_classes=num_classes,
                     channels=channels, image_size=image_size, noise=noise)
    return dataclasses.replace(ds, name=TINY)


if TINY not in DATASETS:
    register_dataset(TINY)(_tinysyn)


# ------------------------------------------------------------------- spaces
def write_space(path: Path, *, nodes: int = 2, gates=("through", "cutoff", "linear", "correct"),
                aux=("mlp",), target="mlp", name: str | None = None, **extra) -> str:
    """A search-space YAML for the tiny data; returns its path as a string."""
    data = {"name": name or Path(path).stem, "nodes": nodes,
            "target_model": {"default": target},
            "aux_models": {"default": list(aux)},
            "gates": gates if isinstance(gates, str) else list(gates), **extra}
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def gate_params(nodes: int, default: str = "through", **gates: str) -> dict:
    """Optuna parameters of one discrete-gate graph: every edge ``default``
    unless named (``label_node0="cutoff"``); every auxiliary model mlp."""
    names = [f"node{i}" for i in range(nodes)]
    params = {f"model_{n}": "mlp" for n in names[1:]}
    for t in names:
        for s in ["label", *names]:
            if s != t:
                params[f"gate_{s}_{t}"] = gates.pop(f"{s}_{t}", default)
    assert not gates, f"no such edges: {gates}"
    return params


# --------------------------------------------------------------------- ASHA
def asha_simulate(curves, reduction: int = 2, last: int | None = None) -> list:
    """Hand-written ASHA rule of ``SuccessiveHalvingPruner(min_resource=1,
    reduction_factor=2, min_early_stopping_rate=0)`` for trials run one after
    another, each reporting every epoch: at epoch 2^r a trial records its value
    at rung r and goes on iff the value is among the top half of every value
    recorded at rung r so far, itself included (index len // 2 - 1 from the
    top, at least 0; ties promote).  ``last``: the search's epoch count, at
    which the objective no longer asks the pruner (a finished trial is not
    stopped).  Returns, per curve, the epoch it was stopped at, or None when it
    ran to its end."""
    rungs: dict[int, list[float]] = {}
    out = []
    for curve in curves:
        rung, stop = 0, None
        for epoch, value in enumerate(curve, 1):
            if epoch < reduction ** rung or epoch == last:
                continue
            vals = rungs.setdefault(rung, [])
            vals.append(value)
            k = max(len(vals) // reduction - 1, 0)
            if value < sorted(vals)[-(k + 1)]:
                stop = epoch
                break
            rung += 1
        out.append(stop)
    return out


def open_asha_study(journal: str, name: str = "asha"):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from ktgfast.search.study import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=JournalStorage(JournalFileBackend(journal)),
                               direction="maximize", load_if_exists=True, pruner=make_pruner(),
                               sampler=optuna.samplers.RandomSampler(seed=0))


def drive_asha(journal: str, curves, start: int = 0, stop: int | None = None,
               hang: tuple[int, int] | None = None, marker: str | None = None) -> dict:
    """The fake objective: curve ``i`` is reported epoch by epoch (``should_prune``
    after every report) by a trial tagged ``curve=i``.  ``hang=(i, e)``: write
    ``marker`` (atomically: the trial's number) and block before reporting
    epoch ``e`` of curve ``i``, until the process is killed."""
    from optuna.trial import TrialState

    study = open_asha_study(journal)
    for idx in range(start, len(curves) if stop is None else stop):
        trial = study.ask()
        trial.set_user_attr("curve", idx)
        for epoch, value in enumerate(curves[idx], 1):
            if hang is not None and (idx, epoch) == tuple(hang):
                write_atomic(marker, str(trial.number))
                _block_until_killed()
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, curves[idx][-1])
    return asha_decisions(study)


def asha_decisions(study) -> dict:
    """{curve index: epoch it was stopped at, or None when it completed}."""
    from optuna.trial import TrialState

    out = {}
    for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        out[t.user_attrs["curve"]] = None if t.state == TrialState.COMPLETE else t.last_step
    return out


# ------------------------------------------------------------ child process
def _block_until_killed() -> None:
    """A process hung on purpose, to be killed by the test (not a timing guess:
    the test waits for the marker written just before, then kills)."""
    while True:
        time.sleep(3600)


class _Barrier:
    """Every process of a run signs in to a folder once; ``wait`` returns when
    ``n`` have signed in."""

    def __init__(self, spec: str):
        folder, n = spec.rsplit(":", 1)
        self.dir, self.n, self.signed = Path(folder), int(n), False

    def sign_in(self) -> None:
        if not self.signed:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / f"worker-{os.getpid()}", "")
            self.signed = True

    def wait(self) -> None:
        wait_for(lambda: len(list(self.dir.glob("worker-*"))) >= self.n,
                 f"{self.n} search workers signed in to {self.dir}")


_first_epoch_seen = False


def _claim(path: str) -> bool:
    """True for the one process that creates ``path`` first."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _before_first_epoch(config, barrier: _Barrier | None) -> None:
    """The knobs acting at the first training epoch of a trial in this process."""
    hang = os.environ.get("KTGFAST_TEST_HANG")
    if hang and _claim(f"{hang}.claim"):
        write_atomic(f"{hang}.pid", str(os.getpid()))
        write_atomic(hang, Path(config.out).name)
        _block_until_killed()
    if os.environ.get("KTGFAST_TEST_AWAIT"):
        mark = Path(os.environ["KTGFAST_TEST_AWAIT"])
        wait_for(mark.exists, f"marker {mark}")
    if barrier is not None:
        barrier.sign_in()
        barrier.wait()
    pause = os.environ.get("KTGFAST_TEST_PAUSE")
    if pause:
        write_atomic(f"{pause}.pid", str(os.getpid()))
        write_atomic(pause, Path(config.out).name)
        wait_for(Path(f"{pause}.go").exists, f"marker {pause}.go")


def _apply_test_knobs() -> None:
    import torch

    from ktgfast.search import storage, study

    torch.set_num_threads(1)
    spec = os.environ.get("KTGFAST_TEST_BARRIER")
    barrier = _Barrier(spec) if spec else None
    run_worker = study.run_worker

    def one_thread_worker(settings, index, device, threads):
        try:
            return run_worker(settings, index, device, 1)
        finally:  # a worker that trained nothing does not keep the others waiting
            if barrier is not None:
                barrier.sign_in()
            if os.environ.get("KTGFAST_TEST_DONE"):
                done = Path(os.environ["KTGFAST_TEST_DONE"])
                done.mkdir(parents=True, exist_ok=True)
                write_atomic(done / f"done-{os.getpid()}", "")

    study.run_worker = one_thread_worker
    if os.environ.get("KTGFAST_TEST_HEARTBEAT_S"):
        storage.HEARTBEAT_S = int(os.environ["KTGFAST_TEST_HEARTBEAT_S"])
    if os.environ.get("KTGFAST_TEST_GRACE_S"):
        storage.GRACE_S = int(os.environ["KTGFAST_TEST_GRACE_S"])
    if not any(os.environ.get(k) for k in ("KTGFAST_TEST_AWAIT", "KTGFAST_TEST_BARRIER",
                                           "KTGFAST_TEST_HANG", "KTGFAST_TEST_PAUSE")):
        return
    make_trainer = study.Trainer  # what the search's objective builds for a trial

    def trainer_with_knobs(graph, data, config=None, **kw):
        trainer = make_trainer(graph, data, config, **kw)
        train_epoch = trainer.train_epoch

        def first_epoch_knobs():
            global _first_epoch_seen
            if not _first_epoch_seen:
                _first_epoch_seen = True
                _before_first_epoch(config, barrier)
            return train_epoch()

        trainer.train_epoch = first_epoch_knobs
        return trainer

    study.Trainer = trainer_with_knobs


if __name__ == "__mp_main__":  # re-imported by a spawned search worker
    _apply_test_knobs()


def main(argv: list[str]) -> int:
    mode, rest = argv[0], argv[1:]
    if mode == "asha":
        kw = json.loads(rest[0])
        drive_asha(**kw)
        return 0
    _apply_test_knobs()
    if mode == "cli":
        from ktgfast.cli import main as cli

        return cli(rest)
    if mode == "search":
        from ktgfast.search import search

        result = search(**json.loads(rest[0]))
        print(f"RESULT trials={result.trials}", flush=True)
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["TINY", "TINY_CONFIG", "TINY_SET", "asha_decisions", "asha_simulate", "drive_asha",
           "gate_params", "open_asha_study", "write_space"]
