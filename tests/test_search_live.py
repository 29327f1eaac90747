"""Searches that survive their own users: a second command on a live study
joins it (journal) or is refused (SQLite) and never fails the first command's
running trials; a worker killed with SIGKILL has its trial failed and queued
again, by a sibling worker or by its command before it ends, or by the next
command when the whole command was killed; ``search status`` shows a RUNNING
trial without a worker as ORPHANED; every storage URL works or is refused with
one line before any training; and a search prints one line per finished trial
with the running best and an ETA.

Real processes and real kills: children run tests/support/search.py (its
knobs: a worker that pauses or hangs inside a trial writes a marker with its
pid; the test waits for markers and process states, never for a guessed time).
The second command of a join runs in the test process itself.  Tests with
subprocesses are marked ``slow``.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

import support.search as helpers
from ktgfast.search import search
from ktgfast.search import study as study_mod
from ktgfast.search.storage import (RETRY_OF, WORKER, WorkerLease, describe, live_leases, open_storage,
                                    remove_dead_leases, resolve_url)
from ktgfast.search.study import status, trial_line
from support.search import TINY, TINY_CONFIG, gate_params, write_space
from support.wait import WAIT_S, wait_for, write_atomic

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.usefixtures("one_thread")]

HELPER = Path(helpers.__file__).resolve()
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
HOST = socket.gethostname()
LINE = re.compile(r"^trial (\d+) ([0-9a-f]{16}|-): (.+) \| best (?:(\d+\.\d\d)% \(trial (\d+)\)|-) \| "
                  r"(\d+)/(\d+) finished, (ETA \S+|done)$")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Pretraining cache in tmp_path; in-process workers keep one thread."""
    monkeypatch.setenv("KTGFAST_CACHE", str(tmp_path / "cache"))
    run_worker = study_mod.run_worker
    monkeypatch.setattr(study_mod, "run_worker", lambda s, i, d, t: run_worker(s, i, d, 1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def built(monkeypatch):
    """Run folders of every trainer the search builds."""
    names: list[str] = []
    make = study_mod.Trainer

    def recording(graph, data, config=None, **kw):
        names.append(Path(config.out).name)
        return make(graph, data, config, **kw)

    monkeypatch.setattr(study_mod, "Trainer", recording)
    return names


def settings(out: Path, study: str, trials: int, **kw) -> dict:
    return {"data": TINY, "val_size": 64, "epochs": 2, "out": str(out), "config": dict(TINY_CONFIG),
            "seed": 0, "trials": trials, "study": study, **kw}


def space(tmp_path: Path) -> str:
    return write_space(tmp_path / "live.yaml", nodes=2, gates=["through", "linear"])


DISTINCT = [gate_params(2, **{e: "linear" for e in edges}) for edges in
            ([], ["label_node0"], ["node1_node0"], ["label_node1"], ["node0_node1"],
             ["label_node0", "node1_node0"])]


def enqueue(url: str, name: str, n: int) -> None:
    """``n`` distinct graphs first (no duplicate, no rejected graph: every trial trains)."""
    study = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize",
                                load_if_exists=True)
    for params in DISTINCT[:n]:
        study.enqueue_trial(params)


def load(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()


def start(tmp_path: Path, kw: dict, log: str, **env) -> subprocess.Popen:
    """A ``ktgfast.search.search(**kw)`` command in a child process."""
    full = {**os.environ, "KTGFAST_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in env.items()}}
    with open(tmp_path / log, "w") as f:
        return subprocess.Popen([sys.executable, str(HELPER), "search", json.dumps(kw)], env=full,
                                stdout=f, stderr=subprocess.STDOUT)


def alive(proc: subprocess.Popen, log: Path):
    def check():
        assert proc.poll() is None, log.read_text()
    return check


def gone(pid: int) -> bool:
    """The process has exited (a zombie has closed its files, so its locks are free)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def trial_lines(text: str) -> list[re.Match]:
    return [m for m in map(LINE.match, text.splitlines()) if m]


def counted(trials) -> list:
    retried = {t.system_attrs.get(RETRY_OF) for t in trials} - {None}
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in retried)]


def assert_retried(trials, dead_number: int, pid: int, budget: int) -> None:
    """The dead worker's trial failed with why, retried once with its graph, and
    the study holds exactly its budget, nothing left RUNNING or WAITING."""
    dead = trials[dead_number]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["error"] == f"worker gone: process {pid} on {HOST} is not alive"
    (retry,) = [t for t in trials if t.system_attrs.get(RETRY_OF) == dead_number]
    assert retry.params == dead.params and retry.state in DONE and retry.intermediate_values
    assert [t.number for t in trials] == list(range(len(trials)))
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len(counted(trials)) == budget and all(t.state in DONE for t in counted(trials))


# ------------------------------------------------------------------ joining
@pytest.mark.slow  # a child command and an in-process one
def test_second_command_joins_a_live_journal_study(tmp_path, capsys):
    """Command A is held inside trial 0; command B on the same study joins:
    it leaves trial 0 alone, runs the 2 trials left of the budget and says
    so; A then finishes its trial.  Nothing fails, the count is exact."""
    out, name, budget = tmp_path / "out", "join", 3
    url = resolve_url(None, out / name)
    enqueue(url, name, budget)
    kw = {"space": space(tmp_path), **settings(out, name, budget)}
    pause = tmp_path / "paused"
    a = start(tmp_path, kw, "a.log", KTGFAST_TEST_PAUSE=pause)
    try:
        wait_for(pause.exists, "command A inside a trial", check=alive(a, tmp_path / "a.log"))
        a_pid = int(Path(f"{pause}.pid").read_text())
        capsys.readouterr()
        seen = status(name, out=str(out))
        assert (seen["summary"]["running"], seen["summary"]["orphaned"]) == (1, 0)
        assert f"trial 0: running (process {a_pid} on {HOST})" in capsys.readouterr().out
        result = search(kw.pop("space"), **kw)  # command B, in this process
        b_out = capsys.readouterr().out
        mid = load(url, name)
        assert mid[0].state == TrialState.RUNNING  # A's trial was not failed
        write_atomic(f"{pause}.go", "")
        assert a.wait(timeout=WAIT_S) == 0, (tmp_path / "a.log").read_text()
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    assert "joining 1 live worker(s) running trial(s) 0" in b_out
    assert "this command runs 2 more (--trials counts the whole study)" in b_out
    assert "trial(s) 0 still running in live workers of another command" in b_out
    assert sorted(int(m[1]) for m in trial_lines(b_out)) == [1, 2]
    assert result.trials == budget
    a_log = (tmp_path / "a.log").read_text()
    assert [int(m[1]) for m in trial_lines(a_log)] == [0] and "RESULT trials=3" in a_log
    trials = load(url, name)
    assert [t.number for t in trials] == list(range(budget)) and all(t.state in DONE for t in trials)
    assert trials[0].system_attrs[WORKER]["pid"] == a_pid
    assert {t.system_attrs[WORKER]["pid"] for t in trials[1:]} == {os.getpid()}


@pytest.mark.slow  # a child command
def test_second_command_on_a_live_sqlite_study_is_refused(tmp_path, built):
    out, name = tmp_path / "out", "sq"
    url = f"sqlite:///{tmp_path}/s.db"
    kw = {"space": space(tmp_path), **settings(out, name, 1, storage=url)}
    pause = tmp_path / "paused"
    a = start(tmp_path, kw, "a.log", KTGFAST_TEST_PAUSE=pause)
    try:
        wait_for(pause.exists, "command A inside a trial", check=alive(a, tmp_path / "a.log"))
        with pytest.raises(ValueError) as exc:
            search(kw.pop("space"), **kw)
        write_atomic(f"{pause}.go", "")
        assert a.wait(timeout=WAIT_S) == 0, (tmp_path / "a.log").read_text()
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    msg = str(exc.value)
    assert "\n" not in msg and describe(url) in msg
    assert "1 live worker(s)" in msg and "sqlite allows one worker at a time" in msg
    assert built == []
    trials = load(url, name)
    assert len(trials) == 1 and all(t.state in DONE for t in trials)


# ------------------------------------------------------------------ killing
@pytest.mark.slow  # a command with two spawned workers, one SIGKILLed
def test_killed_worker_is_retried_by_its_sibling(tmp_path):
    """Two workers; one hangs inside a trial and is SIGKILLed, the other waits
    inside its own trial until the kill is done, then finds the dead trial
    (its worker's lease is free), fails it and runs it again."""
    out, name, budget = tmp_path / "out", "sib", 3
    url = resolve_url(None, out / name)
    enqueue(url, name, budget)
    hang, killed = tmp_path / "hung", tmp_path / "killed"
    kw = settings(out, name, budget, workers=2)
    proc = start(tmp_path, {"space": space(tmp_path), **kw}, "run.log",
                 KTGFAST_TEST_HANG=hang, KTGFAST_TEST_AWAIT=killed)
    try:
        wait_for(hang.exists, "a worker hanging inside a trial", check=alive(proc, tmp_path / "run.log"))
        pid, hung = int(Path(f"{hang}.pid").read_text()), int(hang.read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: gone(pid), f"worker {pid} gone")
        write_atomic(killed, "")
        assert proc.wait(timeout=WAIT_S) == 0, (tmp_path / "run.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "run.log").read_text()
    assert (f"trial {hung}: RUNNING but process {pid} on {HOST} is not alive (found by a worker); "
            "marked FAIL, queued again") in log
    assert "(killed by SIGKILL) exited abnormally" in log and "RESULT trials=4" in log
    trials = load(url, name)
    assert_retried(trials, hung, pid, budget)
    assert sorted(int(m[1]) for m in trial_lines(log)) == [t.number for t in trials if t.number != hung]
    assert not list((out / name / "journal.log.workers").glob("*.lease"))  # no litter


@pytest.mark.slow  # a command with two spawned workers, one SIGKILLed, then a second round
def test_killed_worker_is_retried_before_its_command_ends(tmp_path):
    """The sibling has finished the budget (the dead trial counts while it is
    RUNNING) before the kill: the command itself finds the dead trial at its
    end, queues it again and runs another round; it reports success only
    then."""
    out, name, budget = tmp_path / "out", "end", 3
    url = resolve_url(None, out / name)
    enqueue(url, name, budget)
    hang, done = tmp_path / "hung", tmp_path / "done"
    kw = settings(out, name, budget, workers=2)
    proc = start(tmp_path, {"space": space(tmp_path), **kw}, "run.log",
                 KTGFAST_TEST_HANG=hang, KTGFAST_TEST_DONE=done)
    try:
        check = alive(proc, tmp_path / "run.log")
        wait_for(hang.exists, "a worker hanging inside a trial", check=check)
        wait_for(lambda: done.is_dir() and list(done.iterdir()), "the other worker done", check=check)
        pid, hung = int(Path(f"{hang}.pid").read_text()), int(hang.read_text())
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=WAIT_S) == 0, (tmp_path / "run.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "run.log").read_text()
    assert (f"trial {hung}: RUNNING but process {pid} on {HOST} is not alive (found at the end of "
            "this command); marked FAIL, queued again") in log
    assert_retried(load(url, name), hung, pid, budget)


@pytest.mark.slow  # a child command, SIGKILLed
def test_killed_command_leaves_an_orphan_status_shows_and_the_next_command_retries(tmp_path, capsys):
    out, name, budget = tmp_path / "out", "orphan", 3
    url = resolve_url(None, out / name)
    enqueue(url, name, budget)
    hang = tmp_path / "hung"
    kw = settings(out, name, budget)
    proc = start(tmp_path, {"space": space(tmp_path), **kw}, "run.log", KTGFAST_TEST_HANG=hang)
    try:
        wait_for(hang.exists, "the command hanging inside a trial", check=alive(proc, tmp_path / "run.log"))
        pid, hung = int(Path(f"{hang}.pid").read_text()), int(hang.read_text())
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=WAIT_S) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    capsys.readouterr()
    seen = status(name, out=str(out))
    printed = capsys.readouterr().out
    assert (seen["summary"]["running"], seen["summary"]["orphaned"]) == (0, 1)
    assert seen["orphaned"] == {hung: f"process {pid} on {HOST} is not alive"}
    assert next(r for r in seen["leaderboard"] if r["number"] == hung)["state"] == "ORPHANED"
    assert f"trial {hung}: ORPHANED, RUNNING in the storage but process {pid} on {HOST} is not alive" \
        in printed and "running=0 orphaned=1" in printed
    assert load(url, name)[hung].state == TrialState.RUNNING  # status only looks
    search(space(tmp_path), **kw)  # the next command
    printed = capsys.readouterr().out
    assert (f"trial {hung}: RUNNING but process {pid} on {HOST} is not alive (left by an earlier "
            "command); marked FAIL, queued again") in printed
    assert_retried(load(url, name), hung, pid, budget)
    assert status(name, out=str(out))["summary"]["orphaned"] == 0


def test_leases_tell_live_from_dead_and_dead_ones_are_removed(tmp_path):
    folder = tmp_path / "w"
    dead_pid = _finished_pid()
    with WorkerLease(folder) as lease:
        (folder / f"{HOST}-{dead_pid}-deadbeef.lease").write_text("{}")  # nobody holds it
        (folder / f".{HOST}-{dead_pid}-cafecafe.tmp").write_text("")      # killed while creating
        (folder / ".not-ours.tmp").write_text("")
        assert live_leases(folder) == [lease.name]
        remove_dead_leases(folder)
        assert sorted(p.name for p in folder.iterdir()) == [".not-ours.tmp", f"{lease.name}.lease"]
    assert live_leases(folder) == [] and not list(folder.glob("*.lease"))


def _finished_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.slow  # a child command, interrupted
def test_interrupted_trial_is_queued_again_not_counted(tmp_path):
    """Ctrl-C (SIGINT) inside a trial: the trial is failed as interrupted and
    queued again, so the next command runs it instead of counting it."""
    out, name, budget = tmp_path / "out", "intr", 2
    url = resolve_url(None, out / name)
    enqueue(url, name, budget)
    hang = tmp_path / "hung"
    kw = settings(out, name, budget)
    proc = start(tmp_path, {"space": space(tmp_path), **kw}, "run.log", KTGFAST_TEST_HANG=hang)
    try:
        wait_for(hang.exists, "the command inside a trial", check=alive(proc, tmp_path / "run.log"))
        hung = int(hang.read_text())
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=WAIT_S) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    trials = load(url, name)
    assert trials[hung].state == TrialState.FAIL and trials[hung].user_attrs["error"].startswith("KeyboardInterrupt")
    (retry,) = [t for t in trials if t.system_attrs.get(RETRY_OF) == hung]
    assert retry.state == TrialState.WAITING and retry.params == trials[hung].params
    search(space(tmp_path), **kw)
    trials = load(url, name)
    assert len(counted(trials)) == budget and all(t.state in DONE for t in counted(trials))


# ------------------------------------------------------------- storage URLs
def _bad_urls(tmp_path: Path) -> list[tuple[str, str]]:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notjournal.txt").write_text("hello\nnot json\n")
    (tmp_path / "oneline.txt").write_text("hello\n")  # Optuna skips a broken last line
    port = _free_port()
    return [
        ("sqlite://", "in-memory database"),
        ("sqlite:///:memory:", "in-memory database"),
        (f"sqlite:///{tmp_path}/nofolder/s.db", "does not exist"),
        ("journal:", "no file named after 'journal:'"),
        (f"journal:{tmp_path}", "is a folder, not a journal file"),
        (f"journal:{tmp_path}/afile/j.log", "is a file"),
        ("journal:/proc/ktgfast-no/j.log", "cannot write in folder"),
        (f"journal:{tmp_path}/notjournal.txt", "is not an Optuna journal"),
        (f"journal:{tmp_path}/oneline.txt", "is not an Optuna journal"),
        (f"journal:{tmp_path}/afile", "is not an Optuna journal"),
        ("mysql://ktg:s3cret@db.example/ktg", "unsupported storage"),
        ("redis://localhost:6379", "unsupported storage"),
        ("study.log", "write journal:study.log"),
        (f"postgresql://ktg:s3cret@127.0.0.1:{port}/ktg", "cannot connect"),
        (f"postgresql://ktg:s3cret@127.0.0.1:{port}", "no database named"),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_bad_storage_url_is_one_line_before_any_training(tmp_path, built):
    pytest.importorskip("psycopg2", reason="the PostgreSQL cases need psycopg2")
    sp = space(tmp_path)
    for url, needle in _bad_urls(tmp_path):
        with pytest.raises(ValueError) as exc:
            search(sp, **settings(tmp_path / "out", "bad", 2, storage=url))
        msg = str(exc.value)
        assert needle in msg and describe(url) in msg and "allowed: journal:PATH" in msg, (url, msg)
        assert "\n" not in msg and "s3cret" not in msg, msg
    assert built == []
    assert not (tmp_path / "out").exists()  # nothing was created for the study


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_journal_in_a_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="is not writable"):
            search(space(tmp_path), **settings(tmp_path / "out", "ro", 2, storage=f"journal:{ro}/j.log"))
    finally:
        ro.chmod(0o700)


@pytest.mark.slow  # a real search on an explicit journal path
def test_explicit_journal_and_sqlite_urls_work_end_to_end(tmp_path, capsys):
    sp = space(tmp_path)
    for name, url in (("j", f"journal:{tmp_path}/deep/er/j.log"), ("s", f"sqlite:///{tmp_path}/one.db")):
        r = search(sp, **settings(tmp_path / "out", name, 2, storage=url, epochs=1))
        assert r.trials == 2 and len(load(url, name)) == 2
        assert status(name, out=str(tmp_path / "out"))["summary"]["trials"] == 2
    leases = [p for p in tmp_path.rglob("*.workers") if p.is_dir()]
    assert len(leases) == 2 and not [p for d in leases for p in d.glob("*.lease")]  # no litter


# ----------------------------------------------------------------- talking
def test_one_line_per_finished_trial_with_best_and_eta(tmp_path, monkeypatch, capsys):
    """Known curves (a stand-in trainer): complete, pruned at rung 0,
    duplicate, rejected -- each a line with the digest, the running best and
    the ETA; the last one says done."""
    class Curves:
        def __init__(self, graph, data, config):
            gates = {(e.src, e.dst): e.gate.kind for e in graph.edges}
            self.value, self.epoch = (80.0 if gates[("node1", "node0")] == "through" else 50.0), 0

        def train_epoch(self):
            self.epoch += 1
            return {"epoch": self.epoch, "val_acc:node0": self.value}

    monkeypatch.setattr(study_mod, "Trainer", Curves)
    out, name = tmp_path / "out", "talk"
    url = resolve_url(None, out / name)
    study = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    for p in (gate_params(2), gate_params(2, node1_node0="linear"), gate_params(2),
              gate_params(2, label_node0="cutoff", node1_node0="cutoff")):
        study.enqueue_trial(p)
    sp = write_space(tmp_path / "talk.yaml", nodes=2, gates=["through", "linear", "cutoff"])
    search(sp, **settings(out, name, 4, epochs=4))
    lines = trial_lines(capsys.readouterr().out)
    assert [int(m[1]) for m in lines] == [0, 1, 2, 3]
    trials = load(url, name)
    assert [m[2] for m in lines] == [t.user_attrs["graph_key"] for t in trials]
    outcomes = [m[3] for m in lines]
    assert outcomes[:3] == ["80.00% complete (4 epochs)", "50.00% pruned at rung 0 (epoch 1)",
                            "80.00% duplicate of trial 0"]
    assert outcomes[3].startswith("rejected (") and "never learns" in outcomes[3]
    assert [(m[4], m[5]) for m in lines] == [("80.00", "0")] * 4
    assert [(int(m[6]), int(m[7])) for m in lines] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(m[8].startswith("ETA ") for m in lines[:3]) and lines[3][8] == "done"


def test_eta_is_mean_wall_time_times_trials_left_over_workers():
    study = optuna.create_study(direction="maximize")
    start = datetime.datetime(2026, 1, 1)
    for i, (secs, value) in enumerate([(10, 60.0), (30, 70.0)]):
        t = create_trial(state=TrialState.COMPLETE, value=value, user_attrs={"graph_key": f"{i:016x}"},
                         intermediate_values={1: value})
        t.datetime_start, t.datetime_complete = start, start + datetime.timedelta(seconds=secs)
        study.add_trial(t)
    # mean 20 s, 8 of a budget of 10 left: 160 s on one worker, 40 s on four
    assert trial_line(study, 1, 10, 1).endswith("| best 70.00% (trial 1) | 2/10 finished, ETA 2m40s")
    assert trial_line(study, 1, 10, 4).endswith("2/10 finished, ETA 40s")
    assert trial_line(study, 1, 2, 1).endswith("2/2 finished, done")
    assert trial_line(study, 0, 10, 1).startswith(f"trial 0 {0:016x}: 60.00% complete (1 epochs) |")
