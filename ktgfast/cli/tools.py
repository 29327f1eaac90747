"""``ktgfast info``, ``analyze``, ``bench`` and ``reproduce``."""
from __future__ import annotations

import argparse


def _info(args: argparse.Namespace) -> int:
    from ..info import main

    main()
    return 0


def add_info(sub, method: str | None = None) -> None:
    p = sub.add_parser("info", help="versions, build flags, kernels, DALI",
                       description="Print torch, CUDA and extension build facts and the kernels built.")
    p.set_defaults(run=_info)


def _analyze(args: argparse.Namespace) -> int:
    from ..analysis import analyze_run

    summary = analyze_run(args.run_dir, split=args.split, out=args.out, device=args.device,
                          examples=args.examples, plots=not args.no_plots)
    print(summary["text"])
    print(f"\nwrote {summary['out']}")
    return 0


def add_analyze(sub, method: str | None = None) -> None:
    p = sub.add_parser("analyze", help="diversity (MutualKL, ΔAccuracy, attention error) and "
                                       "gradient-conflict tables of a finished run, with plots",
                       description="Tables and plots of a finished run: diversity between nodes and "
                                   "gradient conflicts between teachers.")
    p.add_argument("run_dir", help="a run folder written by ktgfast train or ktgfast distill")
    p.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="split to analyse (default: test; the analysis selects nothing)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN_DIR/analysis)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.add_argument("--examples", type=int, default=6, metavar="N",
                   help="images in attention_maps.png (default: 6)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(run=_analyze)


def add_bench(sub, method: str | None = None) -> None:
    from ..bench.cli import add_arguments

    p = sub.add_parser("bench", help="run the benchmark suites of a checkout and report ratios and goals")
    add_arguments(p)  # ``main`` hands ``bench ...`` to ktgfast.bench.cli.main whole


def _reproduce(args: argparse.Namespace) -> int:
    from ..reproduce.cli import run

    return run(args)


def add_reproduce(sub, method: str | None = None) -> None:
    from ..reproduce.cli import add_arguments

    p = sub.add_parser("reproduce", help="one command per paper table: reproduce list, reproduce NAME",
                       description="Run the exact recipe of a source paper's table and print the "
                                   "paper's numbers beside ours (docs/reproduce.md).")
    add_arguments(p)
    p.set_defaults(run=_reproduce)
