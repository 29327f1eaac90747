"""``python -m ktgfast.bench [SUITE ...]``: run suites, save JSON, print the report.

Wire as a sub-command with ``add_arguments(subparser)`` and ``main(argv)``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .markdown import check_sections, write_sections
from .report import load, report_suite
from .suites import NoCheckout, discover, find_benchmarks_dir, suite_of_json

# --quick: a smoke run (a few rounds), never numbers to quote.
QUICK_ENV = {"KTGFAST_BENCH_SECONDS": "0.05", "KTGFAST_BENCH_ROUNDS": "1", "KTGFAST_BENCH_LOADER_N": "1024"}


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("suites", nargs="*", metavar="SUITE", help="suites to run (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the suites of this checkout and exit")
    p.add_argument("--quick", action="store_true", help="smoke run: few rounds, short budgets")
    p.add_argument("--check", action="store_true", help="exit 1 when a goal of a suite is missed")
    p.add_argument("--compare", action="append", default=[], metavar="OLD.json",
                   help="an earlier run's JSON: print each row's change against it (repeatable)")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for benchmarks/README.md)")
    p.add_argument("--markdown-into", metavar="FILE",
                   help="write each suite's Markdown report into FILE between its lines "
                        "'<!-- ktgfast bench: NAME -->' and '<!-- /ktgfast bench: NAME -->'")
    p.add_argument("--json-dir", metavar="DIR", help="where the JSON files go (default benchmarks/results)")
    p.add_argument("--from-json", nargs="+", metavar="RUN.json", default=[],
                   help="report saved runs instead of running the suites")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the suites run (KTGFAST_BENCH_DEVICE): cpu times with perf_counter; cuda with "
                        "CUDA events after a synchronize, and records each implementation's peak memory")
    p.add_argument("-k", dest="keyword", metavar="EXPR", help="passed to pytest -k (a subset of a suite's rows)")
    p.add_argument("--plot", action="store_true", help="save ratio bars with the goal lines next to each JSON")
    return p


def cuda_missing() -> str | None:
    """Why CUDA cannot be used here (None: it can)."""
    import torch

    if torch.cuda.is_available():
        return None
    build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"torch.cuda.is_available() is False (torch {torch.__version__}, {build})"


def _run_suite(suite, out: Path, quick: bool, device: str, keyword: str | None = None) -> int:
    env = dict(os.environ, KTGFAST_BENCH_DEVICE=device)
    if quick:
        env.update(QUICK_ENV)
    cmd = [sys.executable, "-m", "pytest", str(suite.path), "-q", "-p", "no:cacheprovider",
           "--benchmark-only", f"--benchmark-json={out}"]
    if keyword:
        cmd += ["-k", keyword]
    print(f"running {suite.name}: {' '.join(cmd)}", flush=True)
    return subprocess.run(cmd, env=env, cwd=suite.path.parent.parent).returncode


def _suite_names(args, runs, suites) -> list[str]:
    """The suites this invocation reports: of the saved runs, or to be run."""
    if args.from_json:
        return [s.name for s in (suite_of_json(d, suites) for _, d in runs) if s]
    return args.suites or list(suites)


def main(argv: list[str] | None = None) -> int:
    args = add_arguments(argparse.ArgumentParser(prog="ktgfast bench", description=__doc__.splitlines()[0])
                         ).parse_args(argv)
    try:
        bench_dir = find_benchmarks_dir()
        suites = discover(bench_dir)
    except NoCheckout as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.list:
        for s in suites.values():
            print(f"{s.name:18s} {s.title}  [{s.path.name}]")
        return 0
    unknown = [n for n in args.suites if n not in suites]
    if unknown:
        print(f"error: unknown suite(s) {', '.join(unknown)}; known: {', '.join(suites)}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not args.from_json:
        missing = cuda_missing()
        if missing:
            print(f"error: --device cuda: {missing}; run on a machine with a CUDA GPU, or --device cpu",
                  file=sys.stderr)
            return 2
    olds = {}
    for p in args.compare:
        d = load(p)
        s = suite_of_json(d, suites)
        if s is None:
            print(f"error: {p} is not a run of a suite of this checkout", file=sys.stderr)
            return 2
        olds[s.name] = d
    runs: list[tuple[Path, dict]] = []
    failed = False
    if args.from_json:
        runs = [(Path(p), load(p)) for p in args.from_json]
    if args.markdown_into:
        try:
            check_sections(args.markdown_into, _suite_names(args, runs, suites))  # before any suite runs
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if not args.from_json:
        out_dir = Path(args.json_dir) if args.json_dir else bench_dir / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in args.suites or list(suites):
            out = out_dir / f"{args.device}_{name}{'_quick' if args.quick else ''}.json"
            rc = _run_suite(suites[name], out, args.quick, args.device, args.keyword)
            if rc != 0:
                failed = True
                print(f"warning: pytest exited {rc} on suite {name}", file=sys.stderr)
            if out.exists():
                runs.append((out, load(out)))
    missed = False
    sections: dict[str, str] = {}
    for path, data in runs:
        s = suite_of_json(data, suites)
        if s is None:
            print(f"warning: {path} holds no benchmark of a suite of this checkout", file=sys.stderr)
            continue
        rep = report_suite(s, data, olds.get(s.name), markdown=args.markdown or bool(args.markdown_into))
        print(rep.text)
        sections[s.name] = rep.text
        missed |= rep.missed
        if args.plot:
            from .plot import plot_ratios

            png = plot_ratios(s, data, path.with_suffix(".png"))
            if png:
                print(f"picture: {png}\n")
    if args.markdown_into and sections:
        write_sections(args.markdown_into, sections)
        print(f"wrote the tables of {', '.join(sections)} into {args.markdown_into}")
    if failed:
        return 1
    return 1 if (args.check and missed) else 0
