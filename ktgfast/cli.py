"""The ``ktgfast`` command line: one sub-command per job, registered by name."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Callable

import yaml


def _info(args: argparse.Namespace) -> int:
    from .info import main

    main()
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, build flags, kernels, DALI")
    p.set_defaults(run=_info)


def _graph_params(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--graph-arg {pair!r}: expected KEY=VALUE (e.g. k=3)")
        k, v = pair.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _graph(args: argparse.Namespace) -> int:
    from .graph import list_presets, render, resolve_graph, summary, to_dot, validate
    from .models import model_options

    if args.action == "list":
        from .graph.presets import describe_preset

        for name in list_presets():
            text, params = describe_preset(name)
            print(f"{name:<20} {text}\n{'':<20} parameters (--graph-arg KEY=VALUE): "
                  f"{', '.join(params) or 'none'}")
        return 0
    if not args.graph:
        raise SystemExit(f"ktgfast graph {args.action}: name a preset or a YAML file")
    graph = validate(resolve_graph(args.graph, **_graph_params(args.graph_arg)), model_options)
    if args.action == "show":
        print(summary(graph))
        if args.dot:
            print(to_dot(graph))
    else:
        out = args.output or f"{graph.name or 'graph'}.png"
        print(f"wrote {render(graph, out)}")
    return 0


def _add_graph(sub) -> None:
    p = sub.add_parser("graph", help="list, show or render a graph (preset or YAML)")
    p.add_argument("action", choices=["list", "show", "render"])
    p.add_argument("graph", nargs="?", help="preset name or YAML file")
    p.add_argument("--graph-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="preset parameter, e.g. k=3 or models=[resnet32,wrn28_2]")
    p.add_argument("--dot", action="store_true", help="also print the DOT source")
    p.add_argument("-o", "--output", help="picture path (.png, .svg or .dot)")
    p.set_defaults(run=_graph)


def _config(args: argparse.Namespace):
    """TrainConfig from --config YAML, overridden by the per-field flags.  On
    --resume the base is the run's own config (its config.yaml), so a field
    not given again -- --epochs included -- keeps the run's value."""
    from pathlib import Path

    from .train import TrainConfig

    overrides = {f.name: getattr(args, f"cfg_{f.name}") for f in fields(TrainConfig)
                 if getattr(args, f"cfg_{f.name}") is not None}
    saved = Path(args.cfg_out) / "config.yaml" if getattr(args, "resume", False) and args.cfg_out else None
    if saved is not None and saved.exists():
        base = (yaml.safe_load(saved.read_text()) or {}).get("config", {})
        known = {f.name for f in fields(TrainConfig)}
        config = TrainConfig.from_dict({k: v for k, v in base.items() if k in known},
                                       where=str(saved))
        if args.config:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
            TrainConfig.from_yaml(args.config)  # its own checks and messages
            config = config.merged(data)
        return config.merged(overrides)
    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    return config.merged(overrides)


def _add_config_flags(p) -> None:
    from .train import TrainConfig

    p.add_argument("--config", help="YAML file with TrainConfig keys")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (fields not given keep the run's values)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds a run: deletes only its ktgfast run files")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kw = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
        p.add_argument(flag, dest=f"cfg_{f.name}", default=None, metavar="V",
                       help=f"(default {default})", **kw)


def _train(args: argparse.Namespace) -> int:
    from .train.methods import trainer_class

    graph, data, method = args.graph, args.data, (None if args.method == "auto" else args.method)
    config = _config(args)
    if args.resume and config.out:
        # Not given again: the run's own graph (its graph.yaml), data set and method.
        from pathlib import Path

        run = Path(config.out)
        saved = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
        if graph is None and (run / "graph.yaml").exists():
            graph = str(run / "graph.yaml")
        data = data or (saved or {}).get("data")
        method = method or (saved or {}).get("method")
    trainer = trainer_class(method)(graph or "dml", data or "mnist5k", config, resume=args.resume,
                                    overwrite=args.overwrite,
                                    graph_params=_graph_params(args.graph_arg))
    result = trainer.fit()
    if trainer.is_main and not trainer.config.verbose:  # (verbose runs end with a summary)
        print(f"run folder: {trainer.run_dir}")
    return 0 if result is not None else 1


def _add_train(sub) -> None:
    from .train.steps import TRAIN_METHODS

    p = sub.add_parser("train", help="train a graph on a dataset",
                       description="Train a knowledge-transfer graph. Flags override --config.")
    p.add_argument("--graph", default=None,
                   help="preset name or YAML file (default dml; on --resume the run's graph.yaml)")
    p.add_argument("--graph-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="preset parameter, e.g. k=3")
    p.add_argument("--data", default=None,
                   help="dataset name (default mnist5k; on --resume the run's data set)")
    p.add_argument("--method", default="auto", choices=["auto", *TRAIN_METHODS],
                   help="training method (default auto: ssl for semi-supervised graphs or "
                        "--labels-per-class, else ktg)")
    _add_config_flags(p)
    p.set_defaults(run=_train)


def _distill(args: argparse.Namespace) -> int:
    from .train.distill import DistillSettings, Distiller

    settings = DistillSettings(
        teachers=args.teachers, teacher_nodes=args.teacher_nodes.split(",") if args.teacher_nodes else None,
        student=args.student, target=args.target, knowledge=args.knowledge.split(","), T=args.T,
        att_weight=args.att_weight, aggregate=args.aggregate, order=args.order,
        pcgrad_reduction=args.pcgrad_reduction, batched_grads=not args.no_batched_grads)
    trainer = Distiller(settings, args.data, _config(args), resume=args.resume,
                        overwrite=args.overwrite)
    trainer.fit()
    if trainer.is_main and not trainer.config.verbose:  # (verbose runs end with a summary)
        print(f"run folder: {trainer.run_dir}")
    return 0


def _add_distill(sub) -> None:
    p = sub.add_parser("distill", help="distil a trained ensemble into one student (PCGrad option)",
                       description="Ensemble -> one student (thesis 4.3.3): one loss per teacher, "
                                   "summed or aggregated with PCGrad. Flags override --config.")
    p.add_argument("--teachers", required=True, help="run folder of the trained teacher graph")
    p.add_argument("--teacher-nodes", default=None, help="comma-separated nodes (default: all models)")
    p.add_argument("--student", default="auto", help="student model (default: the teachers' model)")
    p.add_argument("--data", default=None, help="dataset (default: the teachers' dataset)")
    p.add_argument("--target", default="per-teacher", choices=["per-teacher", "ensemble"])
    p.add_argument("--knowledge", default="prob", help="prob, att or prob,att")
    p.add_argument("--T", type=float, default=2.0, help="temperature (thesis: 1, 2, 5, 10)")
    p.add_argument("--att-weight", type=float, default=1.0)
    p.add_argument("--aggregate", default="sum", choices=["sum", "pcgrad"])
    p.add_argument("--order", default="random", choices=["random", "fixed"], help="PCGrad order")
    p.add_argument("--pcgrad-reduction", default="sum", choices=["sum", "mean"])
    p.add_argument("--no-batched-grads", action="store_true",
                   help="K separate backwards instead of one batched backward")
    _add_config_flags(p)
    p.set_defaults(run=_distill)


def _count_or_fraction(text: str) -> int | float:
    """``10000`` → a count, ``0.2`` → a fraction."""
    value = float(text)
    return int(value) if value.is_integer() and value >= 1 else value


def _search(args: argparse.Namespace) -> int:
    from .search import builtin_spaces, search
    from .search.study import SearchSettings, retrain, status

    what = args.what or []
    if what[:1] == ["spaces"]:
        from .search import load_space

        for name in sorted(builtin_spaces()):
            sp = load_space(name)
            print(f"{name:<20} {sp.nodes} nodes, gates {sp.gates}, ~{sp.size():.3g} graphs")
        return 0
    if what[:1] == ["status"]:
        if len(what) != 2:
            raise SystemExit("usage: ktgfast search status STUDY [--out DIR] [--storage URL]")
        status(what[1], out=args.out, storage=args.storage)
        return 0
    if what:
        raise SystemExit(f"ktgfast search: unknown action {what[0]!r}; allowed: spaces, status "
                         "(or none to run a search)")
    overrides = {}
    for pair in args.set:
        if "=" not in pair:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        k, v = pair.split("=", 1)
        overrides[k] = v
    devices = args.devices.split(",") if args.devices else None
    workers = args.workers or (len(devices) if devices else 1)
    result = search(args.space, args.data, trials=args.trials, epochs=args.epochs, workers=workers,
                    devices=devices, study=args.study, storage=args.storage, out=args.out,
                    sampler=args.sampler, seed=args.seed, val_size=args.val_size,
                    data_root=args.data_root, config=overrides)
    hours = result.wall_s / 3600
    print(f"wall time {result.wall_s:.1f}s"
          + (f", {result.trials / hours:.0f} trials/hour" if hours > 0 else ""))
    if args.retrain:
        settings = SearchSettings(space=args.space, data=args.data, epochs=args.epochs,
                                  study=args.study, out=args.out, seed=args.seed,
                                  data_root=args.data_root, config=overrides)
        retrain(result, settings, seeds=args.seeds, epochs=args.retrain_epochs)
    return 0


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="graph-structure search (ASHA on Optuna); "
                                      "`search spaces`, `search status STUDY`")
    p.add_argument("what", nargs="*", help="nothing (run), 'spaces', or 'status STUDY'")
    p.add_argument("--space", default="ktg-4gates-3nodes", help="built-in space or YAML file")
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--data-root", default=None)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--epochs", type=int, default=8, help="epochs of a trial that is never pruned")
    p.add_argument("--workers", type=int, default=None, help="local worker processes")
    p.add_argument("--devices", default=None, help="e.g. 0,1,2,3 or cuda:0,cuda:1: one worker each")
    p.add_argument("--study", default=None, help="study name (default SPACE-DATA); same name resumes")
    p.add_argument("--storage", default=None,
                   help="journal:PATH (default: a journal in the study folder) or postgresql://...")
    p.add_argument("--out", default="searches", help="folder of study folders")
    p.add_argument("--sampler", default="random", choices=["random", "tpe"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-size", type=_count_or_fraction, default=None,
                   help="validation carved from train when the dataset has none (CIFAR: 10000)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override, e.g. batch_size=128")
    p.add_argument("--retrain", action="store_true",
                   help="train the best graph on all training data and report test accuracy")
    p.add_argument("--seeds", type=int, default=1, help="retraining seeds (mean ± std)")
    p.add_argument("--retrain-epochs", type=int, default=None)
    p.set_defaults(run=_search)


def _analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze_run

    summary = analyze_run(args.run_dir, split=args.split, out=args.out, device=args.device,
                          examples=args.examples, plots=not args.no_plots)
    print(summary["text"])
    print(f"\nwrote {summary['out']}")
    return 0


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="diversity (MutualKL, ΔAccuracy, attention error) and "
                                       "gradient-conflict tables of a finished run, with plots")
    p.add_argument("run_dir", help="a run folder written by ktgfast train or ktgfast distill")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/analysis)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--examples", type=int, default=6, help="images in attention_maps.png")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(run=_analyze)


def _add_bench(sub) -> None:
    from .bench.cli import add_arguments

    p = sub.add_parser("bench", help="run the benchmark suites of a checkout and report ratios and goals")
    add_arguments(p)  # ``main`` hands ``bench ...`` to ktgfast.bench.cli.main whole


# name -> function adding the sub-parser; later commands register here.
COMMANDS: dict[str, Callable] = {"train": _add_train, "distill": _add_distill, "search": _add_search,
                                 "analyze": _add_analyze, "graph": _add_graph, "info": _add_info,
                                 "bench": _add_bench}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktgfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as exc:
        # Bad input: one clear line, no traceback.
        print(f"ktgfast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
