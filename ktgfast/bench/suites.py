"""The suites of a checkout: each ``benchmarks/test_bench_<name>.py`` declares
a module-level ``SUITE = {...}`` (literals only) next to its benchmarks; it is
read with ``ast.literal_eval`` so listing suites imports neither torch nor the
suite."""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path


class NoCheckout(RuntimeError):
    """The benchmarks live in a source checkout, not in an installed wheel."""


@dataclass
class Suite:
    name: str
    path: Path
    title: str
    ktgfast: str                       # the implementation the ratios divide by
    references: dict[str, str]         # impl -> label
    variants: dict[str, str] = field(default_factory=dict)  # ktgfast's other rows
    goals: list[dict] = field(default_factory=list)  # {"group": fnmatch, "ref": impl, "min": ratio}
    bf16: list[str] = field(default_factory=list)    # rows that run in bf16
    ktgfast_label: str = "ktgfast"

    def label(self, impl: str) -> str | None:
        if impl == self.ktgfast:
            return self.ktgfast_label
        return self.references.get(impl) or self.variants.get(impl)


def find_benchmarks_dir(start: str | os.PathLike | None = None) -> Path:
    """``benchmarks/`` of the checkout: from ``KTGFAST_BENCH_DIR``, else next
    to this package's parent (an editable install), else above ``start``."""
    env = os.environ.get("KTGFAST_BENCH_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "benchmarks"
    if here.is_dir():
        return here
    p = Path(start or os.getcwd()).resolve()
    for d in [p, *p.parents]:
        if (d / "benchmarks").is_dir() and any((d / "benchmarks").glob("test_bench_*.py")):
            return d / "benchmarks"
    raise NoCheckout("ktgfast bench needs a source checkout (a benchmarks/ folder with test_bench_*.py); "
                     "run it from the repository, or set KTGFAST_BENCH_DIR")


def read_suite(path: Path) -> Suite:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "SUITE"):
            d = ast.literal_eval(node.value)
            return Suite(name=d["name"], path=path, title=d.get("title", d["name"]), ktgfast=d["ktgfast"],
                         references=dict(d.get("references", {})), variants=dict(d.get("variants", {})),
                         goals=list(d.get("goals", [])), bf16=list(d.get("bf16", [])),
                         ktgfast_label=d.get("ktgfast_label", "ktgfast"))
    raise ValueError(f"{path} declares no SUITE = {{...}}")


def discover(bench_dir: Path | None = None) -> dict[str, Suite]:
    bench_dir = bench_dir or find_benchmarks_dir()
    out = {}
    for p in sorted(Path(bench_dir).glob("test_bench_*.py")):
        s = read_suite(p)
        out[s.name] = s
    return out


def suite_of_json(data: dict, suites: dict[str, Suite]) -> Suite | None:
    """The suite a pytest-benchmark JSON was written by (from its fullnames)."""
    for b in data.get("benchmarks", []):
        fn = b.get("fullname", "")
        for s in suites.values():
            if s.path.name in fn:
                return s
    return None
