"""``ktgfast train`` and ``ktgfast distill``."""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from .args import graph_params
from .config_flags import add_config_flags, config_from_args


def _train(args: argparse.Namespace) -> int:
    from ..train.methods import trainer_class

    graph, data, method = args.graph, args.data, (None if args.method == "auto" else args.method)
    config = config_from_args(args)
    if args.resume and config.out:
        # Not given again: the run's own graph (its graph.yaml), data set and method.
        run = Path(config.out)
        saved = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
        if graph is None and (run / "graph.yaml").exists():
            graph = str(run / "graph.yaml")
        data = data or (saved or {}).get("data")
        method = method or (saved or {}).get("method")
    trainer = trainer_class(method)(graph or "dml", data or "mnist5k", config, resume=args.resume,
                                    overwrite=args.overwrite, graph_params=graph_params(args.graph_arg))
    result = trainer.fit()
    if trainer.is_main and not trainer.config.verbose:  # (verbose runs end with a summary)
        print(f"run folder: {trainer.run_dir}")
    return 0 if result is not None else 1


def add_train(sub, method: str | None = None) -> None:
    from ..train.steps import TRAIN_METHODS

    p = sub.add_parser(
        "train", help="train a graph on a dataset", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="ktgfast train [--graph G] [--data D] [--method M] [--config YAML] [OPTIONS]",
        description="Train a knowledge-transfer graph.  Flags override --config; on --resume a flag "
                    "not given keeps the run's value.\nUnder torchrun every rank runs this command "
                    "(docs/distributed.md).")
    g = p.add_argument_group("graph, data and method")
    g.add_argument("--graph", default=None, metavar="PRESET|YAML",
                   help="preset (ktgfast graph list) or YAML file (default: dml; on --resume the "
                        "run's graph.yaml)")
    g.add_argument("--graph-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="preset parameter, e.g. k=3 (repeatable)")
    g.add_argument("--data", default=None, metavar="NAME",
                   help="mnist5k (bundled), cifar10, cifar100, imagefolder, synthetic (default: "
                        "mnist5k; on --resume the run's)")
    g.add_argument("--method", default="auto", choices=["auto", *TRAIN_METHODS],
                   help="training method; auto: ssl for semi-supervised graphs or "
                        "--labels-per-class, else ktg (default: auto).  With a method given, "
                        "--help shows only its options")
    add_config_flags(p, method=None if method in (None, "auto") else method)
    p.set_defaults(run=_train)


def _distill(args: argparse.Namespace) -> int:
    from ..train.distill import DistillSettings, Distiller

    settings = DistillSettings(
        teachers=args.teachers, teacher_nodes=args.teacher_nodes.split(",") if args.teacher_nodes else None,
        student=args.student, target=args.target, knowledge=args.knowledge.split(","), T=args.T,
        att_weight=args.att_weight, kd_weight=args.kd_weight, aggregate=args.aggregate, order=args.order,
        pcgrad_reduction=args.pcgrad_reduction, batched_grads=not args.no_batched_grads)
    trainer = Distiller(settings, args.data, config_from_args(args), resume=args.resume,
                        overwrite=args.overwrite)
    trainer.fit()
    if trainer.is_main and not trainer.config.verbose:  # (verbose runs end with a summary)
        print(f"run folder: {trainer.run_dir}")
    return 0


def add_distill(sub, method: str | None = None) -> None:
    p = sub.add_parser("distill", help="distil a trained ensemble into one student (PCGrad option)",
                       usage="ktgfast distill --teachers RUN [--aggregate pcgrad] [OPTIONS]",
                       description="Ensemble -> one student (Minami et al., ensemble KTG, 4.3.3): one "
                                   "loss per teacher, summed or aggregated with PCGrad (Yu et al. "
                                   "2020).  Flags override --config.")
    g = p.add_argument_group("teachers, student and losses")
    g.add_argument("--teachers", required=True, metavar="RUN",
                   help="run folder of the trained teacher graph (required)")
    g.add_argument("--teacher-nodes", default=None, metavar="A,B,..",
                   help="teacher nodes (default: every model node)")
    g.add_argument("--student", default="auto", metavar="MODEL",
                   help="student model (default: auto, the teachers' model)")
    g.add_argument("--data", default=None, metavar="NAME", help="dataset (default: the teachers')")
    g.add_argument("--target", default="per-teacher", choices=["per-teacher", "ensemble"],
                   help="one loss per teacher, or one loss to the averaged ensemble "
                        "(default: per-teacher)")
    g.add_argument("--knowledge", default="prob", metavar="prob|att|prob,att",
                   help="what is transferred: probabilities (KL), attention maps, or both "
                        "(default: prob)")
    g.add_argument("--T", type=float, default=2.0,
                   help="KL temperature (the thesis tries 1, 2, 5, 10; default: 2)")
    g.add_argument("--att-weight", type=float, default=1.0, metavar="W",
                   help="weight of the attention losses (default: 1)")
    g.add_argument("--kd-weight", type=float, default=1.0, metavar="W",
                   help="weight of every teacher term, prob and att (default: 1, the thesis's plain sum; "
                        "1/K gives K per-teacher terms the scale of one averaged term)")
    g.add_argument("--aggregate", default="sum", choices=["sum", "pcgrad"],
                   help="combine the per-teacher gradients by sum or PCGrad (default: sum)")
    g.add_argument("--order", default="random", choices=["random", "fixed"],
                   help="PCGrad projection order (default: random, as in Yu et al.)")
    g.add_argument("--pcgrad-reduction", default="sum", choices=["sum", "mean"],
                   help="PCGrad: sum or mean of the projected gradients (default: sum)")
    g.add_argument("--no-batched-grads", action="store_true",
                   help="K separate backwards instead of one batched backward (slower; a check)")
    add_config_flags(p, method="distill")
    p.set_defaults(run=_distill)
