"""The ``ktgfast`` command line: one sub-command per job, registered by name."""
from __future__ import annotations

import argparse
import sys
from typing import Callable


def _info(args: argparse.Namespace) -> int:
    from .info import main

    main()
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, build flags, kernels, DALI")
    p.set_defaults(run=_info)


# name -> function adding the sub-parser; later commands register here.
COMMANDS: dict[str, Callable] = {"info": _add_info}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktgfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
