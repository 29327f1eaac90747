"""Running the evidence study (scripts/study.py): ``results.csv`` and the
scheduler that fills it.

Every (comparison, arm, seed, budget) is one row of ``results.csv``, appended
(and fsynced) as its run finishes, so a stopped study resumes where it
stopped.  A *task* trains one job on one seed.  A job that another comparison
already ran on that seed and budget (the same job name) is not trained again:
its rows are copied under the new comparison's arm name, with wall time 0 (its
time counts once, where it was trained).  A job may need other jobs of the same
seed first (distillation needs the seed's teachers); the scheduler starts it
only after them.

With ``jobs > 1`` tasks run in that many spawned processes (one intra-op thread
each: on a 2-core machine two runs side by side take about the time of one);
the parent alone writes ``results.csv``.  With ``jobs == 1`` they run in this
process, one after the other.
"""
from __future__ import annotations

import csv
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

FIELDS = ["comparison", "arm", "seed", "budget", "run", "val", "test", "selected", "wall_s"]


# ---------------------------------------------------------------- results.csv
def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:  # a line cut by a killed writer is dropped, its run redone
        rows = [r for r in csv.DictReader(f) if None not in r.values() and None not in r]
    for r in rows:
        r["seed"] = int(r["seed"])
        for k in ("val", "test", "wall_s"):
            r[k] = float(r[k])
    return rows


def append_results(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- the plan
@dataclass
class Task:
    comp: object                 # the Comparison whose rows the run writes
    job_index: int               # which of comp.jobs
    seed: int
    budget: str
    needs: list = field(default_factory=list)  # keys (job name, seed, budget) to finish first

    @property
    def job(self):
        return self.comp.jobs[self.job_index]

    @property
    def key(self) -> tuple:
        return (self.job.name, self.seed, self.budget)


def _owner(job_name: str, comparisons) -> tuple | None:
    """(comparison, job index) of the first comparison that trains ``job_name``."""
    for comp in comparisons:
        for i, j in enumerate(comp.jobs):
            if j.name == job_name:
                return comp, i
    return None


def plan(selected, seeds, budget_of: Callable, rows: list[dict], comparisons) -> tuple[list[Task], list[Task]]:
    """The tasks to train, and the (comparison, job, seed) whose rows are copies
    of a run trained elsewhere (now, or by a task of this plan)."""
    done = {(r["run"], r["seed"], r["budget"]) for r in rows}
    tasks: dict[tuple, Task] = {}
    copies: list[Task] = []

    def add(task: Task) -> None:
        for need in task.job.needs:
            key = (need, task.seed, task.budget)
            if key not in done:
                if key not in tasks:
                    owner = _owner(need, comparisons)
                    if owner is None:
                        raise ValueError(f"job {task.job.name!r} needs {need!r}, which no comparison trains")
                    add(Task(owner[0], owner[1], task.seed, task.budget))
                task.needs.append(key)
        tasks[task.key] = task

    for comp in selected:
        budget = budget_of(comp)
        for seed in seeds:
            have = {r["arm"] for r in rows if r["seed"] == seed and r["budget"] == budget
                    and r["comparison"] == comp.name}
            for i, job in enumerate(comp.jobs):
                if set(job.arms) <= have:
                    continue
                t = Task(comp, i, seed, budget)
                if t.key in done or t.key in tasks:
                    copies.append(t)
                else:
                    add(t)
    return list(tasks.values()), copies


# ---------------------------------------------------------------- running
_WORKER: dict = {}


def _init_worker(make_ctx: Callable, ctx_args: tuple, threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    _WORKER["ctx"] = make_ctx(*ctx_args)


def _run_in_worker(comp_name: str, job_index: int, seed: int) -> tuple[dict, float]:
    import study  # the table (scripts/ is on the spawned process's path: the parent's sys.path)
    t0 = time.time()
    scores = study.BY_NAME[comp_name].jobs[job_index].fn(seed, _WORKER["ctx"])
    return scores, time.time() - t0


def _rows(task: Task, scores: dict, wall: float) -> list[dict]:
    return [{"comparison": task.comp.name, "arm": arm, "seed": task.seed, "budget": task.budget,
             "run": task.job.name, "val": s["val"], "test": s["test"], "selected": s["selected"],
             "wall_s": round(wall / len(scores), 1)} for arm, s in scores.items()]


def _copy(task: Task, csv_path: Path, log) -> bool:
    """Rows of a run trained under another comparison, renamed; False if the run is missing."""
    src = [r for r in read_results(csv_path) if (r["run"], r["seed"], r["budget"]) == task.key]
    if not src:
        return False
    if len(task.job.arms) == 1:
        src = src[:1]
        names = {src[0]["arm"]: task.job.arms[0]}
    else:
        names = {a: a for a in task.job.arms}
    append_results(csv_path, [{**r, "comparison": task.comp.name, "arm": names[r["arm"]], "wall_s": 0.0,
                               "selected": f"{r['selected']} (run of {r['comparison']})"}
                              for r in src if r["arm"] in names])
    log(f"{task.comp.name:<16} seed {task.seed} {task.job.name:<24} reused from {src[0]['comparison']}")
    return True


def _failed(exc: BaseException) -> str:
    """A run's failure as the one line the page shows."""
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"failed: {type(exc).__name__}: {first}"


def run_all(selected, seeds, budget_of: Callable, csv_path: Path, comparisons, *, ctx=None,
            jobs: int = 1, make_ctx: Callable | None = None, ctx_args: tuple = (), threads: int = 1,
            deadline: float | None = None, log=None) -> dict[str, str]:
    """Trains what ``results.csv`` lacks for the ``selected`` comparisons on
    ``seeds``; returns each comparison's state: "done", or why not."""
    log = log or (lambda line: print(line, flush=True))
    tasks, copies = plan(selected, seeds, budget_of, read_results(csv_path), comparisons)
    state = {c.name: "done" for c in selected}
    pending = list(tasks)
    finished: set = set()
    failed: dict[tuple, str] = {}
    total, t_start, walls = len(tasks), time.time(), []

    def blame(task: Task, why: str) -> None:
        failed[task.key] = why
        if state.get(task.comp.name, "done") == "done":
            state[task.comp.name] = why

    def record(task: Task, scores: dict, wall: float) -> None:
        rows = _rows(task, scores, wall)
        append_results(csv_path, rows)
        finished.add(task.key)
        walls.append(wall)
        left = total - len(finished) - len(failed)
        eta = (f", ETA {sum(walls) / len(walls) * left / max(jobs, 1) / 60:.0f} min" if left else "")
        log(f"{task.comp.name:<16} seed {task.seed} {task.job.name:<24} " +
            "  ".join(f"{r['arm']}: test {r['test']:.2f} ({r['selected']})" for r in rows) +
            f"  [{wall:.0f} s; {len(finished)}/{total} runs{eta}]")

    def ready() -> Task | None:
        for t in pending:
            bad = [k for k in t.needs if k in failed]
            if bad:
                pending.remove(t)
                blame(t, f"failed: needs run {bad[0][0]!r} seed {t.seed}, which failed")
                return ready()
            if all(k in finished for k in t.needs):
                pending.remove(t)
                return t
        return None

    def out_of_time(t: Task) -> bool:
        if deadline is None or time.time() <= deadline:
            return False
        for rest in [t, *pending]:
            if state.get(rest.comp.name, "done") == "done":
                state[rest.comp.name] = f"stopped before run {rest.job.name!r} seed {rest.seed}"
        pending.clear()
        return True

    if jobs <= 1:
        while (t := ready()) is not None:
            if out_of_time(t):
                break
            t0 = time.time()
            try:
                scores = t.job.fn(t.seed, ctx)
            except Exception as exc:  # one failed run does not stop the others; the page says why
                traceback.print_exc()
                blame(t, _failed(exc))
                continue
            record(t, scores, time.time() - t0)
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(make_ctx, ctx_args, threads)) as pool:
            running: dict = {}
            while pending or running:
                while len(running) < jobs and (t := ready()) is not None:
                    if out_of_time(t):
                        break
                    running[pool.submit(_run_in_worker, t.comp.name, t.job_index, t.seed)] = t
                if not running:
                    break  # what is left waits on runs that failed or were not started
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    t = running.pop(fut)
                    try:
                        scores, wall = fut.result()
                    except Exception as exc:  # noqa: BLE001 - as above
                        log(f"{t.comp.name} seed {t.seed} {t.job.name}: {type(exc).__name__}: {exc}")
                        blame(t, _failed(exc))
                        continue
                    record(t, scores, wall)
    for t in pending:  # never became ready and nothing else said why
        if state.get(t.comp.name, "done") == "done":
            state[t.comp.name] = f"not run: run {t.job.name!r} seed {t.seed} waited on runs that did not finish"
    for c in copies:
        if not _copy(c, csv_path, log) and state.get(c.comp.name, "done") == "done":
            state[c.comp.name] = f"not run: run {c.job.name!r} seed {c.seed} (shared) did not finish"
    if walls:
        log(f"{len(walls)} runs trained in {(time.time() - t_start) / 60:.1f} min ({jobs} at a time)")
    return state


__all__ = ["FIELDS", "Task", "append_results", "plan", "read_results", "run_all"]
