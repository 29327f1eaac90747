"""Run folders and honest resume.

* A folder that already holds a run (``RUN_MARKERS``) is never trained into
  again unless the run is resumed (``--resume``) or replaced on purpose
  (``--overwrite``, which deletes only ktgfast's own run files).
* ``--resume`` continues the same experiment: the graph, the method, the data
  set (name and content fingerprint) and every ``"math"`` field of
  ``FIELDS`` must match the checkpoint; a ``"may change"`` field is applied
  and recorded in ``resumes.yaml``.
* Temporary files of interrupted atomic writes (``.NAME.*.tmp``) are removed
  when a run starts in the folder.
"""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from .config import TrainConfig

MATH, MAY_CHANGE = "math", "may change"

# Fields a resumed run may change: bookkeeping, output, speed without effect
# on the numbers, and the budget.  ``epochs`` may grow (or shrink); the
# schedules that depend on it (cosine, default milestones, ramp-ups) are then
# those of the new budget from the resumed step on.
_MAY_CHANGE = {"epochs", "eval_batch_size", "log_every", "progress_bar", "tensorboard",
               "checkpoint", "verbose", "threads", "out", "device", "data_root", "download",
               "pretrain_cache"}

# field -> "math" or "may change".  Every TrainConfig field is listed (the
# test suite checks it); a new field counts as math until it is listed here.
FIELDS: dict[str, str] = {f.name: (MAY_CHANGE if f.name in _MAY_CHANGE else MATH)
                          for f in fields(TrainConfig)}

# Files whose presence means the folder holds a run (ktgfast's own files).
RUN_MARKERS = ("checkpoint.pt", "metrics.csv", "config.yaml", "graph.yaml", "resumes.yaml",
               "generations.csv", "distill.yaml", "conflicts.csv")
_RUN_GLOBS = ("generation*_best.pt", "tb/events.out.tfevents.*")
_TMP = re.compile(r"^\..+\.tmp$")


class RunFolderError(ValueError):
    """A run folder that holds a run, or a resume that does not match it."""


def run_files(run_dir: Path) -> list[str]:
    """The ktgfast run files in ``run_dir`` (names relative to it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [m for m in RUN_MARKERS if (run_dir / m).exists()]
    for g in _RUN_GLOBS:
        found += sorted(str(p.relative_to(run_dir)) for p in run_dir.glob(g))
    return found


def check_fresh(run_dir: Path, overwrite: bool = False) -> list[str]:
    """Refuse to start a new run in a folder that holds one; with
    ``overwrite`` delete its run files (only those) and return their names."""
    run_dir = Path(run_dir)
    found = run_files(run_dir)
    if not found:
        return []
    if not overwrite:
        shown = ", ".join(n for n in found if "/" not in n) or found[0]
        if "checkpoint.pt" in found:
            ways = "continue it with --resume, choose another --out, or pass --overwrite to delete its run files"
        else:  # nothing to resume from: e.g. a run that died before its first checkpoint
            ways = ("it has no checkpoint.pt to --resume from; choose another --out, or pass --overwrite "
                    "to delete its run files")
        raise RunFolderError(f"run folder {str(run_dir)!r} already holds a run ({shown}); {ways}")
    for name in found:
        (run_dir / name).unlink()
    return found


def remove_stale_temps(run_dir: Path) -> list[str]:
    """Delete the temporary files of interrupted atomic writes
    (``ktgfast.train.checkpoint``) in ``run_dir``; returns their names."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    gone = []
    for p in run_dir.iterdir():
        if p.is_file() and _TMP.match(p.name):
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return sorted(gone)


def compare(saved: dict, config: TrainConfig, where: str) -> dict[str, tuple]:
    """Check ``config`` against the checkpoint's config ``saved``: a math field
    that differs is refused (naming the field and both values); returns the
    may-change fields that differ, ``{field: (old, new)}``."""
    new = config.to_dict()
    changed = {}
    for name, kind in FIELDS.items():
        if name not in saved:
            continue  # a field newer than the checkpoint
        old, cur = saved[name], new[name]
        if old == cur:
            continue
        if kind == MATH:
            flag = "--" + name.replace("_", "-")
            raise RunFolderError(f"cannot resume {where}: config.{name} ({flag}) is {cur!r} but the run "
                             f"was trained with {old!r}; resume with the same value or choose another --out")
        changed[name] = (old, cur)
    return changed


def describe_graph_key(key: str) -> str:
    """A short form of ``Graph.key()``: its nodes and edge count."""
    import json

    try:
        g = json.loads(key)
        nodes = ", ".join(f"{n['name']}:{n.get('model', '?')}" for n in g.get("nodes", []))
        return f"nodes {nodes}; {len(g.get('edges', []))} edges"
    except (ValueError, TypeError, KeyError, AttributeError):
        return key[:80]


def check_same(what: str, old, new, where: str, flag: str | None = None) -> None:
    if old is not None and old != new:
        given = f"{new!r} ({flag} {new})" if flag else repr(new)
        raise RunFolderError(f"cannot resume {where}: the {what} is {given} but the run was trained "
                         f"with {old!r}; resume with the same {what} or choose another --out")


__all__ = ["FIELDS", "MATH", "MAY_CHANGE", "RUN_MARKERS", "RunFolderError", "check_fresh", "check_same", "compare",
           "remove_stale_temps", "run_files"]
