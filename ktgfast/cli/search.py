"""``ktgfast search`` (run), ``search spaces`` and ``search status STUDY``."""
from __future__ import annotations

import argparse

from .args import UsageError, count_or_fraction, key_values


def run(args: argparse.Namespace) -> int:
    from ..search import builtin_spaces, search
    from ..search.study import SearchSettings, retrain, status

    what = args.what or []
    if what[:1] == ["spaces"]:
        from ..search import load_space

        for name in sorted(builtin_spaces()):
            sp = load_space(name)
            print(f"{name:<20} {sp.nodes} nodes, gates {sp.gates}, ~{sp.size():.3g} graphs")
        return 0
    if what[:1] == ["status"]:
        if len(what) != 2:
            raise UsageError("search status needs one STUDY: ktgfast search status STUDY [--out DIR] "
                             "[--storage URL]")
        status(what[1], out=args.out, storage=args.storage)
        return 0
    if what:
        raise UsageError(f"unknown action {what[0]!r}; allowed: spaces, status STUDY "
                         "(or none to run a search)")
    overrides = key_values(args.set, "--set", "batch_size=128")
    devices = args.devices.split(",") if args.devices else None
    workers = args.workers or (len(devices) if devices else 1)
    result = search(args.space, args.data, trials=args.trials, epochs=args.epochs, workers=workers,
                    devices=devices, study=args.study, storage=args.storage, out=args.out,
                    sampler=args.sampler, seed=args.seed, val_size=args.val_size,
                    data_root=args.data_root, config=overrides)
    hours, ran = result.wall_s / 3600, result.trials if result.ran is None else result.ran
    print(f"wall time {result.wall_s:.1f}s, {ran} trial(s) added to the study meanwhile"
          + (f", {ran / hours:.0f} trials/hour" if hours > 0 and ran else ""))
    if args.retrain:
        settings = SearchSettings(space=args.space, data=args.data, epochs=args.epochs,
                                  study=args.study, out=args.out, seed=args.seed,
                                  data_root=args.data_root, config=overrides)
        retrain(result, settings, seeds=args.seeds, epochs=args.retrain_epochs)
    return 0


def add(sub, method: str | None = None) -> None:
    p = sub.add_parser("search", help="graph-structure search (ASHA on Optuna); "
                                      "search spaces, search status STUDY",
                       description="Search graph structures with ASHA (Li et al. 2020) on Optuna: "
                                   "trials are scored on the validation split, never on test.")
    p.add_argument("what", nargs="*", metavar="ACTION",
                   help="nothing: run a search; spaces: list the built-in spaces; "
                        "status STUDY: trials of a study")
    s = p.add_argument_group("what to search")
    s.add_argument("--space", default="ktg-4gates-3nodes", metavar="NAME|YAML",
                   help="built-in space (ktgfast search spaces) or YAML file "
                        "(default: ktg-4gates-3nodes)")
    s.add_argument("--data", default="mnist5k", metavar="NAME", help="dataset (default: mnist5k)")
    s.add_argument("--data-root", default=None, metavar="DIR",
                   help="dataset folder (default: $KTGFAST_DATA or ~/.cache/ktgfast/data)")
    s.add_argument("--val-size", type=count_or_fraction, default=None, metavar="N|F",
                   help="validation carved from train when the dataset has none "
                        "(default: the dataset's split; CIFAR needs one, e.g. 10000)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override for every trial, e.g. batch_size=128 (repeatable)")
    b = p.add_argument_group("budget and sampler")
    b.add_argument("--trials", type=int, default=40, help="the study's budget: a command runs trials until the study holds N, finished or "
                        "running; a second command on the same study runs only what is left "
                        "(default: 40)")
    b.add_argument("--epochs", type=int, default=8,
                   help="epochs of a trial that is never pruned (default: 8)")
    b.add_argument("--sampler", default="random", choices=["random", "tpe"],
                   help="Optuna sampler (default: random, as in the thesis)")
    b.add_argument("--seed", type=int, default=0, help="sampler and training seed (default: 0)")
    w = p.add_argument_group("workers and storage")
    w.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: one per --devices entry, else 1)")
    w.add_argument("--devices", default=None, metavar="0,1,..",
                   help="e.g. 0,1,2,3 or cuda:0,cuda:1: one worker each (default: none)")
    w.add_argument("--study", default=None, help="study name (default: SPACE-DATA); the same name resumes, or joins while it runs")
    w.add_argument("--storage", default=None, metavar="URL",
                   help="journal:PATH (default: a journal file in the study folder; local workers and "
                        "commands share it), postgresql://USER@HOST/DB (many machines), or "
                        "sqlite:///FILE.db (one worker at a time)")
    w.add_argument("--out", default="searches", metavar="DIR",
                   help="folder of study folders (default: searches)")
    r = p.add_argument_group("retraining the best graph")
    r.add_argument("--retrain", action="store_true",
                   help="train the best graph on all training data and report test accuracy")
    r.add_argument("--seeds", type=int, default=1, help="retraining seeds, mean ± std (default: 1)")
    r.add_argument("--retrain-epochs", type=int, default=None, metavar="N",
                   help="epochs of the retraining (default: --epochs)")
    p.set_defaults(run=run)
