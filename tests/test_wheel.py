"""The wheel works outside the checkout and the sdist can build it.

`pip wheel --no-build-isolation .` (CPU-only: KTGFAST_SKIP_CUDA=1) builds a wheel;
it is installed into a temporary target folder and its console entry point runs
`info`, `graph list`, `search spaces` and a one-epoch training from a temporary
folder under `python -S`: no site processing, so neither the checkout nor an
editable install of it (a meta-path finder installed by a .pth file) can be
imported; the dependencies come from an explicit sys.path of the current
environment's site folders, none inside the checkout.

Slow: the wheel build compiles the CPU extension, unless the persistent object
folder build/ext-cpu-* of an earlier CPU-only build of this checkout is reused.
"""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SPACES = sorted(p.name for p in (REPO / "ktgfast" / "search" / "spaces").glob("*.yaml"))


def _run(cmd, cwd, env=None, timeout=1800):
    out = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if out.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-6000:]}")
    return out.stdout


def _inside(path: str, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root)
        return True
    except ValueError:
        return False


def _build_env():
    env = dict(os.environ, KTGFAST_SKIP_CUDA="1", MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    env.pop("FORCE_CUDA", None)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheelhouse")
    log = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-build-isolation", "--no-deps",
                "--no-index", "-w", str(out), str(REPO)], cwd=REPO, env=_build_env())
    assert "CUDA kernels: no (KTGFAST_SKIP_CUDA=1)" in log
    assert "ktgfast build:" in log  # the reuse report of setup.py's build_ext
    wheels = list(out.glob("ktgfast-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def target(wheel, tmp_path_factory):
    target = tmp_path_factory.mktemp("target")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
          "--target", str(target), str(wheel)], cwd=target)
    return target


def _deps_path() -> list[str]:
    """The current environment's import folders minus the checkout: where torch
    and the other dependencies live (a venv's and, with system-site-packages, the
    base interpreter's)."""
    paths = []
    for p in sys.path:
        if p and os.path.isdir(p) and not _inside(p, REPO) and p not in paths:
            paths.append(p)
    import torch

    assert any(_inside(torch.__file__, Path(p).resolve()) for p in paths)
    return paths


def _python(target: Path, cwd: Path, code: str) -> str:
    """Run ``code`` under ``python -S`` with sys.path = [target, stdlib, deps]."""
    prelude = f"import sys; sys.path[:0] = [{str(target)!r}]; sys.path += {_deps_path()!r}\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(KTGFAST_CACHE=str(cwd / "cache"), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return _run([sys.executable, "-S", "-c", prelude + code], cwd=cwd, env=env)


def _ktgfast(target: Path, cwd: Path, *args: str) -> str:
    """The wheel's own console entry point (from its entry_points.txt)."""
    (dist_info,) = target.glob("ktgfast-*.dist-info")
    entry = configparser.ConfigParser()
    entry.read(dist_info / "entry_points.txt")
    module, func = entry["console_scripts"]["ktgfast"].split(":")
    code = (f"import importlib; sys.argv = ['ktgfast', *{list(args)!r}]\n"
            f"sys.exit(getattr(importlib.import_module({module!r}), {func!r})())")
    return _python(target, cwd, code)


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "ktgfast").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == modules  # none missing, none stale
    assert any(n.startswith("ktgfast/_C.") and n.endswith(".so") for n in names), names
    assert sorted(Path(n).name for n in names if n.startswith("ktgfast/search/spaces/")) == SPACES
    assert not any(n.startswith(("csrc/", "tests/", "build/")) for n in names)


def test_wheel_imports_from_target_only(target, tmp_path):
    out = _python(target, tmp_path, (
        "import ktgfast, ktgfast._C\n"
        "print('PKG', ktgfast.__file__)\n"
        "print('EXT', ktgfast._C.__file__)\n"
        "print('FINDERS', [m for m in sys.modules if 'editable' in m])\n"))
    lines = dict(line.split(" ", 1) for line in out.splitlines()
                 if line.startswith(("PKG ", "EXT ", "FINDERS ")))
    assert _inside(lines["PKG"], target.resolve()), lines
    assert _inside(lines["EXT"], target.resolve()), lines
    assert lines["FINDERS"] == "[]"


def test_wheel_commands(target, tmp_path):
    info = _ktgfast(target, tmp_path, "info")
    assert "gated_edge_loss" in info
    assert "dml" in _ktgfast(target, tmp_path, "graph", "list")
    spaces = _ktgfast(target, tmp_path, "search", "spaces")
    for name in SPACES:
        assert Path(name).stem in spaces
    run = tmp_path / "run"
    _ktgfast(target, tmp_path, "train", "--graph", "dml", "--data", "mnist5k", "--epochs", "1",
             "--out", str(run))
    assert (run / "metrics.csv").is_file()
    assert (run / "config.yaml").is_file()


def test_sdist_carries_csrc(tmp_path):
    _run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
          "sdist", "--dist-dir", str(tmp_path)], cwd=REPO, env=_build_env(), timeout=600)
    (sdist,) = tmp_path.glob("ktgfast-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "csrc").rglob("*")
               if p.is_file() and p.suffix in (".cpp", ".cu", ".h", ".cuh")}
    assert {Path(s).suffix for s in sources} == {".cpp", ".cu", ".h", ".cuh"}
    assert sources <= names, sorted(sources - names)
    assert {"setup.py", "pyproject.toml", "README.md"} <= names
    assert {f"ktgfast/search/spaces/{s}" for s in SPACES} <= names
    assert not any(n.startswith("build/") or n.endswith((".so", ".o")) for n in names)
