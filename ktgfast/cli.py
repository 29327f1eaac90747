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
        print("\n".join(list_presets()))
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


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, Trainer

    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = {f.name: getattr(args, f"cfg_{f.name}") for f in fields(TrainConfig)
                 if getattr(args, f"cfg_{f.name}") is not None}
    config = config.merged(overrides)
    trainer = Trainer(args.graph, args.data, config, resume=args.resume,
                      graph_params=_graph_params(args.graph_arg))
    result = trainer.fit()
    print(f"run folder: {trainer.run_dir}")
    return 0 if result is not None else 1


def _add_train(sub) -> None:
    from .train import TrainConfig

    p = sub.add_parser("train", help="train a graph on a dataset",
                       description="Train a knowledge-transfer graph. Flags override --config.")
    p.add_argument("--graph", default="dml", help="preset name or YAML file (default dml)")
    p.add_argument("--graph-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="preset parameter, e.g. k=3")
    p.add_argument("--data", default="mnist5k", help="dataset name (default mnist5k)")
    p.add_argument("--config", help="YAML file with TrainConfig keys")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kw = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
        p.add_argument(flag, dest=f"cfg_{f.name}", default=None, metavar="V",
                       help=f"(default {default})", **kw)
    p.set_defaults(run=_train)


# name -> function adding the sub-parser; later commands register here.
COMMANDS: dict[str, Callable] = {"train": _add_train, "graph": _add_graph, "info": _add_info}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktgfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as exc:
        # Bad input: one clear line, no traceback.
        print(f"ktgfast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
