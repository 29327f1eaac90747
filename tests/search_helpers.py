"""Helpers of tests/test_search.py that must also run in child processes.

Importing this module registers ``tinysyn``: the ``synthetic`` data made tiny
(256 train / 64 test grey 28x28 images, 4 classes).  A search reads its data by
name only, so the tests need a registered name; 28 px is the ``mlp`` model's
default input size, and search spaces cannot pass model options.

Run as a script it is the ``__main__`` of a child process (the module is then
re-imported by every ``spawn`` worker as ``__mp_main__``, so they see
``tinysyn`` too):

    python tests/search_helpers.py cli search --data tinysyn ...   # ktgfast's CLI
    python tests/search_helpers.py search '{"space": ..., ...}'    # ktgfast.search.search(**json)
    python tests/search_helpers.py asha '{"journal": ..., ...}'    # the fake ASHA driver

Test-only knobs read from the environment in such a child (monkeypatches of
module attributes, no source file is touched):
``KTGFAST_TEST_EPOCH_SLEEP`` seconds slept before every training epoch (so a
trial is reliably caught mid-flight), ``KTGFAST_TEST_HEARTBEAT_S`` /
``KTGFAST_TEST_GRACE_S`` override ``ktgfast.search.storage.HEARTBEAT_S`` /
``GRACE_S``, and search workers always use one intra-op thread.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import yaml

from ktgfast.data import DATASETS, get_dataset, register_dataset

HERE = Path(__file__).resolve()
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
    ``marker`` and sleep before reporting epoch ``e`` of curve ``i`` (to be killed)."""
    from optuna.trial import TrialState

    study = open_asha_study(journal)
    for idx in range(start, len(curves) if stop is None else stop):
        trial = study.ask()
        trial.set_user_attr("curve", idx)
        for epoch, value in enumerate(curves[idx], 1):
            if hang is not None and (idx, epoch) == tuple(hang):
                Path(marker).write_text(str(trial.number))
                time.sleep(600)
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
def _apply_test_knobs() -> None:
    import torch

    from ktgfast.search import storage, study
    from ktgfast.train import Trainer

    torch.set_num_threads(1)
    run_worker = study.run_worker
    study.run_worker = lambda settings, index, device, threads: run_worker(settings, index, device, 1)
    if os.environ.get("KTGFAST_TEST_HEARTBEAT_S"):
        storage.HEARTBEAT_S = int(os.environ["KTGFAST_TEST_HEARTBEAT_S"])
    if os.environ.get("KTGFAST_TEST_GRACE_S"):
        storage.GRACE_S = int(os.environ["KTGFAST_TEST_GRACE_S"])
    pause = float(os.environ.get("KTGFAST_TEST_EPOCH_SLEEP", "0") or 0)
    if pause > 0:
        train_epoch = Trainer.train_epoch

        def slow_epoch(self):
            time.sleep(pause)
            return train_epoch(self)

        Trainer.train_epoch = slow_epoch


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
