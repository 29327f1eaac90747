"""``ktgfast reproduce list`` / ``ktgfast reproduce NAME``: one command per paper
table (docs/reproduce.md).  ``add_arguments(parser)`` fills a parser (the
``reproduce`` sub-command of ``ktgfast``), ``run(args)`` runs it."""
from __future__ import annotations

import argparse
from pathlib import Path

LIST = "list"


def _seeds(text: str) -> tuple[int, ...]:
    """Seeds as a comma list of integers and inclusive ranges: ``3`` -> (3,),
    ``0,4`` -> (0, 4), ``0-4`` -> (0, 1, 2, 3, 4)."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            a, sep, b = part.partition("-")
            seeds += list(range(int(a), int(b) + 1)) if sep else [int(a)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: seeds and ranges such as 0,3 or 0-4") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: at least one seed, none twice")
    return tuple(seeds)


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: true or false")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="a recipe (one paper table), or 'list' to show them all")
    p.add_argument("--dry-run", action="store_true",
                   help="a few steps per row on synthetic data of the dataset's shape (no download)")
    p.add_argument("--show", action="store_true", help="print the recipe, its rows and numbers; train nothing")
    p.add_argument("--out", default="reproduce", help="output folder: run folders and results.csv "
                                                      "(appended to; the same --out resumes)")
    p.add_argument("--data-root", default=None, help="dataset folder (CIFAR: holds cifar-*-py/; "
                                                     "Stanford Dogs: train/ and test/)")
    p.add_argument("--download", type=_bool, default=False, metavar="BOOL",
                   help="fetch a missing CIFAR (true/false; default false)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seeds", type=_seeds, default=None, metavar="LIST",
                   help="override the recipe's seeds: e.g. 0, 0,3 or 0-4")
    p.add_argument("--rows", default=None, metavar="ROW[,ROW]", help="train only these rows")
    p.add_argument("--graph", action="append", default=[], metavar="ROW=FILE",
                   help="train FILE (e.g. a search's best_graph.yaml) for ROW instead of its graph")
    p.add_argument("--teachers", default=None, metavar="RUN_DIR",
                   help="distillation rows: distil this trained run instead of training the recipe's teacher")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines; only results")
    p.set_defaults(run=run)


def _list() -> int:
    from .tables import RECIPES

    for r in RECIPES.values():
        print(f"{r.name:<24} {r.paper}\n{'':<24} {r.title}; {r.dataset}, {len(r.rows)} rows, "
              f"{len(r.seeds)} seeds")
    return 0


def _show(recipe) -> int:
    print(f"{recipe.name}: {recipe.paper}\n  {recipe.title}\n  data: {recipe.dataset} ({recipe.split})\n"
          f"  models: {recipe.models}\n  seeds: {', '.join(map(str, recipe.seeds))}\n"
          f"  recipe: {', '.join(f'{k}={v}' for k, v in recipe.train.items())}")
    rows = ([recipe.teacher] if recipe.teacher is not None else []) + list(recipe.rows)
    for row in rows:
        graph = row.graph or f"student {row.distill.get('student', 'auto')}"
        args = f" {row.graph_args}" if row.graph_args else ""
        extra = f" {row.config}" if row.config else ""
        extra += f" {row.distill}" if row.distill else ""
        paper = "; ".join(f"{k} {v}" for k, v in row.paper.items()) or f"paper: {row.note or 'no number'}"
        print(f"  {row.name:<26} {row.label}\n  {'':<26} graph {graph}{args} ({row.source}), method "
              f"{row.method}{extra}\n  {'':<26} {paper}")
    if recipe.differs:
        print("  differs from the paper:\n" + "\n".join(f"    - {d}" for d in recipe.differs))
    return 0


def _graphs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--graph {pair!r}: expected ROW=FILE")
        row, path = pair.split("=", 1)
        out[row] = path
    return out


def run(args: argparse.Namespace) -> int:
    from .runner import RunOptions, run_recipe
    from .tables import get_recipe

    if args.name == LIST:
        return _list()
    recipe = get_recipe(args.name)
    if args.show:
        return _show(recipe)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    recipe.select(rows)  # unknown rows: one line, before any work
    opts = RunOptions(out=Path(args.out), dry_run=args.dry_run, data_root=args.data_root,
                      download=args.download, device=args.device, seeds=args.seeds, rows=rows,
                      graphs=_graphs(args.graph), teachers=args.teachers, verbose=not args.quiet)
    run_recipe(recipe, opts)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ktgfast reproduce", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"ktgfast reproduce: error: {exc}\n")


__all__ = ["add_arguments", "main", "run"]
