"""ktgfast: train, search and benchmark knowledge-transfer graphs.

Run "ktgfast COMMAND --help" for a command's options.  Errors are one line
(exit 2 for bad input, 1 for a failed run); --debug or KTGFAST_DEBUG=1 shows
the traceback."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import graph, search, tools, train
from .args import UsageError
from .config_flags import config_from_args as _config  # noqa: F401  (the old name)
from ..parallel.env import shutdown
from .errors import debug_wanted, exit_code, one_line

# name -> function adding the sub-parser (given the --method when one is known,
# so --help shows only the option groups that method reads).
COMMANDS: dict[str, Callable] = {"train": train.add_train, "distill": train.add_distill,
                                 "search": search.add, "analyze": tools.add_analyze,
                                 "graph": graph.add, "reproduce": tools.add_reproduce, "info": tools.add_info,
                                 "bench": tools.add_bench}


def _method(argv: list[str]) -> str | None:
    """The --method of a command line, read before parsing it."""
    for i, a in enumerate(argv):
        if a == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--method="):
            return a.split("=", 1)[1]
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktgfast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    method = _method(argv or [])
    for add in COMMANDS.values():
        add(sub, method)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_wanted(argv)
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["bench"]:
        from ..bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = build_parser(argv).parse_args(argv)
    try:
        code = args.run(args)
        shutdown()  # under torchrun: the process group goes before the interpreter does
        return code
    except Exception as exc:  # noqa: BLE001 -- sorted by exit_code; bugs re-raised
        code = 2 if isinstance(exc, UsageError) else exit_code(exc)
        if code is None or debug:
            raise
        print(f"ktgfast {args.command}: error: {one_line(exc)}", file=sys.stderr)
        if code == 1:
            print("(--debug or KTGFAST_DEBUG=1 shows the traceback)", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
