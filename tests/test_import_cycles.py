"""No import cycles in ktgfast (``scripts/import_cycles.py``), and the checker
itself: it must see cycles hidden by function-local imports, resolve relative
imports and submodules, and count a package's ``__init__`` as a dependency.
"""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The packages whose modules must take part in no import cycle (a cycle counts
# when it passes through any module of one of them): the whole package.
CHECKED_PACKAGES = ("ktgfast",)


def _checker():
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ic = _checker()


def test_no_import_cycles_in_checked_packages():
    graph = ic.build_graph(ROOT / "ktgfast")
    assert "ktgfast.search.study" in graph.files and "ktgfast.data.mixup" in graph.files
    text, counted = ic.report(graph, only=list(CHECKED_PACKAGES))
    full, _ = ic.report(graph)
    print(full)  # the whole package's report, for -s
    assert counted == 0, text


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    return root


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import helper\n",
        "b.py": """\
            def helper():
                from . import a   # function-local: still a dependency
                return a
            """,
        "c.py": "import pkg.a\n",
    })
    graph = ic.build_graph(root)
    assert graph.successors("pkg.a") == ["pkg.b"]
    assert graph.successors("pkg.b") == ["pkg.a"]
    assert graph.successors("pkg.c") == ["pkg.a"]
    assert ic.strongly_connected(graph) == [["pkg.a", "pkg.b"]]
    text, counted = ic.report(graph)
    assert counted == 1
    assert "cycle: pkg.a -> pkg.b -> pkg.a" in text
    assert "pkg/b.py:2" in text and "pkg/a.py:1" in text
    assert ic.main([str(root)]) == 1
    # restricted to a package the cycle does not pass through: none counted
    assert ic.report(graph, only=["pkg.c"])[1] == 0


def test_type_checking_imports_and_modules_outside_the_package_do_not_count(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "import os\nfrom .b import f\n",
        "b.py": """\
            from typing import TYPE_CHECKING
            import numpy
            if TYPE_CHECKING:
                from .a import Thing
            def f():
                pass
            """,
    })
    graph = ic.build_graph(root)
    assert graph.successors("pkg.a") == ["pkg.b"] and graph.successors("pkg.b") == []
    assert ic.report(graph)[1] == 0 and ic.main([str(root)]) == 0
    assert ic.report(ic.build_graph(root, type_checking=True))[1] == 1


def test_submodules_and_package_inits_are_dependencies(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "sub/__init__.py": "from .x import X\n",      # the package's __init__ imports x
        "sub/x.py": "from ..y import Y\nX = 1\n",
        "sub/z.py": "from . import x\n",              # a submodule, not sub/__init__
        "y.py": "from .sub import z\nY = 2\n",        # ``sub.z`` the submodule, and sub's __init__
        "w.py": "from .sub.x import X\n",             # initialises sub/__init__ on the way
    })
    graph = ic.build_graph(root)
    assert graph.successors("pkg.sub.z") == ["pkg.sub.x"]
    assert graph.successors("pkg.y") == ["pkg.sub", "pkg.sub.z"]
    assert graph.successors("pkg.w") == ["pkg.sub", "pkg.sub.x"]
    assert graph.successors("pkg.sub.x") == ["pkg.y"]  # its own package is not counted
    comps = ic.strongly_connected(graph)
    assert comps == [["pkg.sub", "pkg.sub.x", "pkg.sub.z", "pkg.y"]]
    text, counted = ic.report(graph)
    assert "cycle: pkg.sub.x -> pkg.y -> pkg.sub.z -> pkg.sub.x" in text
    assert "cycle: pkg.sub -> pkg.sub.x -> pkg.y -> pkg.sub" in text
    assert counted == 2


def test_a_folder_that_is_not_a_package_is_refused(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a package"):
        ic.build_graph(tmp_path / "plain")
