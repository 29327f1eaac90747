"""Import cycles of a Python package, found statically.

    python scripts/import_cycles.py                 # the ktgfast package beside this script
    python scripts/import_cycles.py path/to/pkg     # any package directory
    python scripts/import_cycles.py --only ktgfast.search ktgfast.data

Every ``.py`` file under the package is parsed with :mod:`ast` (nothing is
imported or executed).  Every ``import`` statement counts, wherever it stands:
at module level, inside a function or method, under ``try``/``if``.  A
function-local import still makes the module depend on the imported one; it
only delays the cycle to the first call, so it does not remove it.  Imports
under ``if TYPE_CHECKING:`` are not counted (they never run), unless
``--type-checking`` is given.

An import names the deepest module of the package that it reaches:
``from ..graph import Edge`` depends on ``ktgfast.graph`` (its
``__init__``), ``from ..graph.spec import Edge`` on ``ktgfast.graph.spec``,
``from . import ssl`` (``ssl`` a submodule) on that submodule.  Python also
runs the ``__init__`` of every package on the way, so
``ktgfast.search.report`` importing ``ktgfast.train.checkpoint`` depends on
``ktgfast.train`` too; the importing module's own enclosing packages (already
being initialised when it runs) are not counted.  Imports of modules outside
the package are ignored, and so are dynamic imports
(``importlib.import_module(name)``).

Output: the strongly connected components of the import graph that hold a
cycle, each with its elementary cycles (shortest first; at most
``--max-cycles`` per component) and, for every edge of a printed cycle, the
file and line of the import statement.  Exit status 1 when any cycle exists
(among the ``--only`` packages, when given: a cycle counts when it passes
through a module of one of them), else 0.
"""
from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImportGraph:
    """Modules of one package and their imports of each other.

    ``edges[a][b]`` is the list of ``(path, line)`` of the statements of
    module ``a`` that import module ``b``."""

    package: str
    files: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, dict[str, list[tuple[str, int]]]] = field(default_factory=dict)

    def add(self, src: str, dst: str, where: tuple[str, int]) -> None:
        """``src`` imports ``dst`` at ``where``, and so initialises every
        package above ``dst`` that does not also enclose ``src``."""
        parts = dst.split(".")
        for n in range(1, len(parts) + 1):
            target = ".".join(parts[:n])
            encloses_src = src == target or src.startswith(target + ".")
            if target == src or (n < len(parts) and (encloses_src or target not in self.files)):
                continue
            sites = self.edges.setdefault(src, {}).setdefault(target, [])
            if where not in sites:
                sites.append(where)

    def successors(self, module: str) -> list[str]:
        return sorted(self.edges.get(module, {}))


def module_name(path: Path, root: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, type_checking: bool):
    """Every Import / ImportFrom node, skipping ``if TYPE_CHECKING:`` bodies
    unless ``type_checking``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve_base(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute name ``from <base> import ...`` refers to."""
    if node.level == 0:
        return node.module
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]  # a module's relative imports start at its package
    up = node.level - 1
    if up > len(parts) - 1:
        return None  # beyond the top-level package
    base = parts[:len(parts) - up]
    if node.module:
        base = [*base, *node.module.split(".")]
    return ".".join(base)


def _deepest(name: str, modules: set[str]) -> str | None:
    """The longest prefix of dotted ``name`` that is a module of the package."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def build_graph(package_dir: str | Path, type_checking: bool = False) -> ImportGraph:
    """The import graph of the package in ``package_dir`` (a folder with an
    ``__init__.py``; its name is the package's name)."""
    root = Path(package_dir).resolve()
    if not (root / "__init__.py").exists():
        raise ValueError(f"{root} is not a package (no __init__.py)")
    graph = ImportGraph(root.name)
    for path in sorted(root.rglob("*.py")):
        if not all((d / "__init__.py").exists() for d in path.parents if d != root.parent
                   and root in (d, *d.parents)):
            continue  # a script in a plain folder, not a module of the package
        graph.files[module_name(path, root, root.name)] = path
    modules = set(graph.files)
    for module, path in graph.files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        shown = str(path.relative_to(root.parent))
        for node in _imports(tree, type_checking):
            where = (shown, node.lineno)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    dst = _deepest(alias.name, modules)
                    if dst is not None:
                        graph.add(module, dst, where)
                continue
            base = _resolve_base(module, is_package, node)
            if base is None:
                continue
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule when there is one.
                target = _deepest(f"{base}.{alias.name}", modules) if alias.name != "*" else None
                if target is None or target == _deepest(base, modules):
                    target = _deepest(base, modules)
                if target is not None:
                    graph.add(module, target, where)
    return graph


def strongly_connected(graph: ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components with a cycle only, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph.files):
        if start in index:
            continue
        work = [(start, iter(graph.successors(start)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph.successors(nxt))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def cycles_in(graph: ImportGraph, component: list[str], limit: int) -> tuple[list[list[str]], bool]:
    """Elementary cycles inside one component, each starting at its smallest
    module, shortest first; at most ``limit`` (True when more exist)."""
    members = set(component)
    order = {m: i for i, m in enumerate(component)}
    found: list[list[str]] = []
    more = False
    for start in component:
        # cycles whose smallest module is ``start``: paths over larger modules only
        path = [start]
        on_path = {start}
        iters = [iter(graph.successors(start))]
        while iters:
            step = next(iters[-1], None)
            if step is None:
                iters.pop()
                on_path.discard(path.pop())
                continue
            if step not in members or order[step] < order[start]:
                continue
            if step == start:
                if len(found) >= limit * 20:  # enough to pick the shortest from
                    more = True
                    iters.clear()
                    break
                found.append(list(path))
                continue
            if step in on_path:
                continue
            path.append(step)
            on_path.add(step)
            iters.append(iter(graph.successors(step)))
        if more:
            break
    found.sort(key=lambda c: (len(c), c))
    return found[:limit], more or len(found) > limit


def report(graph: ImportGraph, only: list[str] | None = None, max_cycles: int = 20) -> tuple[str, int]:
    """The printed report and the number of cycles counted (after ``only``)."""
    def inside(module: str) -> bool:
        return only is None or any(module == p or module.startswith(p + ".") for p in only)

    lines: list[str] = []
    counted = 0
    for comp in strongly_connected(graph):
        cycles, more = cycles_in(graph, comp, max_cycles)
        if only is not None:
            cycles = [c for c in cycles if any(inside(m) for m in c)]
            if not cycles and not any(inside(m) for m in comp):
                continue
        if not cycles:
            continue
        counted += len(cycles)
        lines.append(f"component of {len(comp)} modules: {', '.join(comp)}")
        for cycle in cycles:
            lines.append("  cycle: " + " -> ".join([*cycle, cycle[0]]))
            for a, b in zip(cycle, [*cycle[1:], cycle[0]]):
                where = ", ".join(f"{p}:{n}" for p, n in graph.edges[a][b])
                lines.append(f"    {a} -> {b}  ({where})")
        if more:
            lines.append(f"  ... more cycles in this component (shown: the {max_cycles} shortest)")
    scope = f" among {', '.join(only)}" if only else ""
    head = (f"{graph.package}: {len(graph.files)} modules, "
            f"{sum(len(v) for v in graph.edges.values())} internal imports; ")
    if counted:
        head += f"import cycles{scope}:"
    else:
        head += f"no import cycles{scope}"
    return "\n".join([head, *lines]), counted


def main(argv: list[str] | None = None) -> int:
    default = Path(__file__).resolve().parent.parent / "ktgfast"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", nargs="?", default=str(default),
                        help="package directory (default: the repository's ktgfast)")
    parser.add_argument("--only", nargs="+", metavar="MODULE",
                        help="count only cycles through modules of these packages (dotted names)")
    parser.add_argument("--max-cycles", type=int, default=20,
                        help="cycles printed per strongly connected component (default 20)")
    parser.add_argument("--type-checking", action="store_true",
                        help="also count imports under `if TYPE_CHECKING:`")
    args = parser.parse_args(argv)
    graph = build_graph(args.package, type_checking=args.type_checking)
    text, counted = report(graph, args.only, args.max_cycles)
    print(text)
    return 1 if counted else 0


if __name__ == "__main__":
    sys.exit(main())
