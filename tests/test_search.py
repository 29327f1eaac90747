"""Graph-structure search: spaces, ASHA decisions (also across a killed
driver), real searches with their outputs and resume, two local workers on one
journal, rejected / duplicate / NaN trials, the honest protocol (the test split
is never read), storage URLs, and PostgreSQL with a worker killed mid-trial.

Searches run on ``tinysyn`` (tests/support/search.py: 256 grey 28x28 images,
4 classes) with ``mlp`` nodes, a few trials of at most 4 epochs, one intra-op
thread.  Multi-process tests run tests/support/search.py as the child's main
module, so spawned workers register ``tinysyn`` as well; its knobs make those
tests wait for events (a worker hung inside a trial, two workers inside trials
at once, a heartbeat gone stale), never for a guessed time.  Searches that
train, subprocess workers and PostgreSQL are marked ``slow``.

PostgreSQL: a throw-away cluster on 127.0.0.1 (initdb/pg_ctl from
/usr/lib/postgresql/*/bin, as the ``postgres`` user when run as root).  Without
the server binaries those tests skip, unless ``KTGFAST_INSTALL_POSTGRES=1``
(CI), which apt-get installs ``postgresql`` and turns every skip into a failure.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import io
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState

import ktgfast.data as kdata
import ktgfast.models as kmodels
from ktgfast.cli import main as cli
from ktgfast.graph import Edge, Gate, Graph, GraphError, Node, load_graph, validate
from ktgfast.models import model_options
from ktgfast.search import builtin_spaces, load_space, search
from ktgfast.search import study as study_mod
from ktgfast.search.space import PHI_MAX, SearchSpace
from ktgfast.search import storage as storage_mod
from ktgfast.search.storage import WORKER, describe, open_storage, resolve_url
from ktgfast.search.study import SearchSettings, recover_stale, retrain, search_view, status
from ktgfast.train import Trainer

import support.search as helpers
from support.search import (TINY, TINY_CONFIG, TINY_SET, asha_simulate, drive_asha, gate_params,
                            open_asha_study, write_space)
from support.wait import WAIT_S, wait_for

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.usefixtures("one_thread")]

HELPER = Path(helpers.__file__).resolve()
PNG = b"\x89PNG\r\n\x1a\n"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
BUILTIN = {"ens-2nodes", "ens-3nodes", "ktg-4gates-2nodes", "ktg-4gates-3nodes", "ktg-4gates-4nodes",
           "ktg-sine-3nodes", "ssl-diverse-2nodes", "ssl-diverse-3nodes", "ssl-fixmatch-2nodes"}


# ------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True, scope="module")
def _quiet_optuna():
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(before)


def _patch_search_env(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Pretraining cache in ``root``; in-process search workers keep one thread
    (``_run_workers`` would give a single worker all cores)."""
    mp.setenv("KTGFAST_CACHE", str(root / "cache"))
    run_worker = study_mod.run_worker
    mp.setattr(study_mod, "run_worker", lambda s, i, d, t: run_worker(s, i, d, 1))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    _patch_search_env(monkeypatch, tmp_path)
    yield
    torch.set_num_threads(1)


def tiny(out: Path, **kw) -> dict:
    """search() keyword arguments for the tiny data (val carved from train)."""
    base = dict(data=TINY, val_size=64, epochs=4, out=str(out), config=dict(TINY_CONFIG), seed=0)
    base.update(kw)
    return base


def journal_study(out: Path, name: str) -> optuna.Study:
    """The study of a search in ``out`` (its default journal), opened or created."""
    storage = open_storage(resolve_url(None, Path(out) / name))
    return optuna.create_study(study_name=name, storage=storage, direction="maximize",
                               load_if_exists=True)


def trials_of(out: Path, name: str) -> list:
    return journal_study(out, name).get_trials()


def metrics_rows(trial_dir: Path) -> list[dict]:
    with open(trial_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def child_env(root: Path, **extra) -> dict:
    env = {**os.environ, "KTGFAST_CACHE": str(root / "cache"), "PYTHONUNBUFFERED": "1"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli_search_args(space: str, out: Path, study: str, trials: int, epochs: int, *more: str) -> list:
    sets = [x for s in TINY_SET for x in ("--set", s)]
    return ["search", "--space", space, "--data", TINY, "--val-size", "0.25", "--trials", str(trials),
            "--epochs", str(epochs), "--study", study, "--out", str(out), *sets, *more]


@pytest.fixture
def built_trainers(monkeypatch):
    """Names of the run folders of every Trainer constructed (trials and pretraining)."""
    names: list[str] = []
    init = Trainer.__init__

    def counting(self, graph, data, config=None, **kw):
        names.append(Path(config.out).name if config is not None and config.out else "?")
        return init(self, graph, data, config, **kw)

    monkeypatch.setattr(Trainer, "__init__", counting)
    return names


class FakeTrainer:
    """Stands in for the Trainer inside the objective: no model, the target's
    validation accuracy follows a curve chosen by the test."""

    built: list[str] = []
    curve_for = staticmethod(lambda trial_number, graph: [50.0] * 8)

    def __init__(self, graph, data, config):
        assert data.test is None
        self.config, self.epoch = config, 0
        number = int(Path(config.out).name)
        FakeTrainer.built.append(Path(config.out).name)
        self.curve = FakeTrainer.curve_for(number, graph)

    def train_epoch(self) -> dict:
        self.epoch += 1
        return {"epoch": self.epoch, "val_acc:node0": self.curve[self.epoch - 1]}


@pytest.fixture
def fake_trainer(monkeypatch):
    FakeTrainer.built = []
    monkeypatch.setattr(FakeTrainer, "curve_for", staticmethod(lambda number, graph: [50.0] * 8))
    monkeypatch.setattr(study_mod, "Trainer", FakeTrainer)
    return FakeTrainer


def edge_gate(graph: Graph, src: str, dst: str) -> str:
    return next(e.gate.kind for e in graph.edges if (e.src, e.dst) == (src, dst))


# --------------------------------------------------------------------- spaces
def _sample(space: SearchSpace, seed: int, n: int, dataset: str = "cifar10"):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    graphs, params = [], []
    for _ in range(n):
        trial = study.ask()
        graphs.append(space.sample(trial, dataset))
        params.append(dict(trial.params))
        study.tell(trial, 0.0)
    return graphs, params, study


def test_space_sizes_and_per_dataset_models():
    sp = load_space("ktg-4gates-3nodes")
    pairs = sp.edge_pairs()
    assert len(pairs) == 9 == len(set(pairs))  # N² edges: N(N-1) between models + N from the label
    assert sum(s == "label" for s, _ in pairs) == 3 and all(s != t for s, t in pairs)
    # thesis: 3 nodes, 3 model types, 4 gates -> 3^2 * 4^9 > 2 million graphs
    assert sp.size("cifar10") == 3 ** 2 * 4 ** 9 == 2_359_296 > 2_000_000
    assert sp.size("mnist5k") == 2 ** 2 * 4 ** 9  # per-dataset model lists
    assert sp.aux_for("cifar10") == ["resnet32", "resnet110", "wrn28_2"]
    assert sp.aux_for("mnist5k") == ["cnn_small", "mlp"] and sp.aux_for("synthetic") == ["cnn_small"]
    assert sp.target_for("cifar100") == "resnet32" and sp.target_for("mnist5k") == "cnn_small"
    assert load_space("ktg-4gates-2nodes").size() == 3 * 4 ** 4
    assert load_space("ktg-4gates-4nodes").size() == 3 ** 3 * 4 ** 16
    assert load_space("ktg-sine-3nodes").size() == math.inf
    assert SearchSpace.from_dict({"nodes": 1, "gates": ["through"]}).size() == 1


def test_sampling_is_seeded_and_covers_every_edge():
    sp = SearchSpace.from_dict({"name": "s", "nodes": 3, "temperature": 4.0,
                                "aux_models": {"default": ["resnet32", "wrn28_2"], "mnist5k": ["mlp"]}})
    graphs, params, _ = _sample(sp, 7, 25)
    again_graphs, again, _ = _sample(sp, 7, 25)
    _, other, _ = _sample(sp, 8, 25)
    assert params == again and [g.key() for g in graphs] == [g.key() for g in again_graphs]
    assert params != other
    names = {f"model_node{i}" for i in (1, 2)} | {f"gate_{s}_{t}" for s, t in sp.edge_pairs()}
    seen_gates = set()
    for g, p in zip(graphs, params):
        assert set(p) == names
        assert {(e.src, e.dst) for e in g.edges} == set(sp.edge_pairs()) and len(g.edges) == 9
        for e in g.edges:
            assert e.gate.kind == p[f"gate_{e.src}_{e.dst}"] and e.gate.kind in sp.gates
            assert (e.loss, e.T) == (("ce", 1.0) if e.src == "label" else ("kl", 4.0))
            seen_gates.add((e.src == "label", e.gate.kind))
        assert g.nodes[0].model == "auto" and g.target_name == "node0"
        assert [n.model for n in g.nodes[1:]] == [p["model_node1"], p["model_node2"]]
        assert all(n.model in ("resnet32", "wrn28_2") for n in g.nodes[1:])
        frozen_target = all(e.gate.kind == "cutoff" for e in g.incoming("node0"))
        if frozen_target:
            with pytest.raises(GraphError, match="never learns"):
                validate(g, model_options)
        else:
            validate(g, model_options)
    # every gate occurs on label edges and on model edges alike
    assert seen_gates == {(lab, k) for lab in (True, False) for k in sp.gates}
    mnist, _, _ = _sample(sp, 7, 5, dataset="mnist5k")
    assert {n.model for g in mnist for n in g.nodes[1:]} == {"mlp"}


def test_sine_space_samples_f_and_phi_in_range():
    sp = load_space("ktg-sine-3nodes")
    assert PHI_MAX == pytest.approx(1.5 * math.pi)
    graphs, params, study = _sample(sp, 0, 40)
    for g in graphs:
        assert len(g.edges) == 9
        for e in g.edges:
            assert e.gate.kind == "sine"
            assert 0.0 <= e.gate.f <= 1.0 and 0.0 <= e.gate.phi <= 1.5 * math.pi
    dists = study.trials[0].distributions
    for s, t in sp.edge_pairs():
        f, phi = dists[f"f_{s}_{t}"], dists[f"phi_{s}_{t}"]
        assert (f.low, f.high) == (0.0, 1.0)
        assert (phi.low, phi.high) == (0.0, pytest.approx(1.5 * math.pi))
    phis = [e.gate.phi for g in graphs for e in g.edges]
    assert max(phis) > math.pi  # the range really extends beyond pi


@pytest.mark.parametrize("text, needle", [
    ("nodes: 2\ngatez: [through]\n", "unknown key 'gatez'"),
    ("nodes: 2\ngates: [through, bogus]\n", "'bogus' is not a searchable discrete gate"),
    ("nodes: 2\ngates: [through, threshold]\n", "allowed: through, cutoff, linear, correct"),
    ("nodes: 2\ngates: []\n", ".gates"),
    ("nodes: 0\n", ".nodes: 0"),
    ("nodes: three\n", ".nodes: 'three'"),
    ("nodes: true\n", ".nodes: True"),
    ("gates: [through]\n", ".nodes: None"),
    ("nodes: 2\naux_models: {mnist5k: [mlp]}\n", "needs a 'default' entry"),
    ("nodes: 2\naux_models: []\n", "non-empty list of models"),
    ("- nodes\n- 2\n", "expected a mapping"),
    ("nodes: [2\n", "is not valid YAML"),
])
def test_space_yaml_errors_name_the_problem(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as exc:
        load_space(str(path))
    assert needle in str(exc.value) and "bad.yaml" in str(exc.value)


def test_unknown_space_lists_the_builtins():
    assert set(builtin_spaces()) == BUILTIN
    with pytest.raises(ValueError, match="neither built in nor a file") as exc:
        load_space("no-such-space")
    assert all(name in str(exc.value) for name in BUILTIN)


def test_cli_search_spaces_lists_the_builtins(capsys):
    assert cli(["search", "spaces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(BUILTIN)
    three = next(line for line in lines if line.startswith("ktg-4gates-3nodes"))
    assert "3 nodes" in three and "2.36e+06" in three
    assert "inf" in next(line for line in lines if line.startswith("ktg-sine-3nodes"))
    assert cli(["search", "bogus"]) == 2
    assert "ktgfast search: error: unknown action 'bogus'; allowed: spaces" in capsys.readouterr().err


def test_canonical_form_identifies_equal_graphs():
    nodes = [Node("node0", "mlp"), Node("node1", "mlp")]
    a = Graph(nodes, [Edge("label", "node0", "ce"), Edge("node1", "node0"),
                      Edge("label", "node1", "ce", Gate("cutoff")), Edge("node0", "node1")])
    b = Graph(nodes, [Edge("node0", "node1"), Edge("node1", "node0"), Edge("label", "node0", "ce")],
              name="other")
    assert a.digest(16) == b.digest(16)
    c = Graph(nodes, [Edge("label", "node0", "ce"), Edge("node1", "node0", gate=Gate("linear")),
                      Edge("node0", "node1")])
    assert c.digest(16) != a.digest(16)


# ----------------------------------------------------------------------- ASHA
def _curve(e1, e2, e4, e8):
    """Values at the rungs (epochs 1, 2, 4, 8); epochs between repeat the last rung."""
    return [float(v) for v in (e1, e2, e2, e4, e4, e4, e4, e8)]


# Hand-computed (rule: at epoch 2^r a trial records its value at rung r and is
# promoted iff value >= the (len//2 - 1, at least 0)-th largest of all values
# recorded at rung r so far, itself included):
#   T0 50 | alone everywhere                                   -> completes
#   T1 40 | rung0 [50,40], k=0, needs 50                        -> stopped at 1
#   T2 60 ok | 58: rung1 [55,58] ok | 59: rung2 [60,59], needs 60 -> stopped at 4
#   T3 45 | rung0 [40,45,50,60], k=1, needs 50                  -> stopped at 1
#   T4 55: rung0 5 values k=1 needs 55 (tie promotes) | 70: [55,58,70] ok |
#      75: [60,59,75] ok | 65: rung3 [70,65] needs 70            -> stopped at 8
#   T5 52: rung0 6 values k=2 needs 52 (tie) | 50: rung1 [50,55,58,70] k=1 needs 58 -> stopped at 2
#   T6 30: rung0 7 values k=2 needs 52                          -> stopped at 1
#   T7 90 everywhere: rung0 k=3 needs 52, rung1 k=1 needs 70, rung2 k=1 needs 75,
#      rung3 [70,65,90] k=0 needs 90                            -> completes
HAND_CURVES = [_curve(50, 55, 60, 70), _curve(40, 45, 50, 60), _curve(60, 58, 59, 65),
               _curve(45, 50, 55, 60), _curve(55, 70, 75, 65), _curve(52, 50, 60, 70),
               _curve(30, 40, 50, 60), _curve(90, 90, 90, 90)]
HAND_STOPS = {0: None, 1: 1, 2: 4, 3: 1, 4: 8, 5: 2, 6: 1, 7: None}
# The search's objective does not ask the pruner at its last epoch (a trial that
# has trained all its epochs is finished, not stopped): T4 completes there.
OBJECTIVE_STOPS = {**HAND_STOPS, 4: None}


def _random_curves(n: int, seed: int, epochs: int = 8) -> list:
    rng = random.Random(seed)
    # small integers: many ties, which promote
    return [[float(rng.randint(0, 12) + e) for e in range(epochs)] for _ in range(n)]


def test_asha_decisions_equal_hand_computed(tmp_path):
    assert dict(enumerate(asha_simulate(HAND_CURVES))) == HAND_STOPS
    journal = str(tmp_path / "asha.log")
    assert drive_asha(journal, HAND_CURVES) == HAND_STOPS
    trials = open_asha_study(journal).get_trials()
    for t in trials:
        stop = HAND_STOPS[t.user_attrs["curve"]]
        assert t.state == (TrialState.COMPLETE if stop is None else TrialState.PRUNED)
        assert sorted(t.intermediate_values) == list(range(1, (stop or 8) + 1))
        # the pruner's rung records: every rung reached, the failed one included
        reached = {1: 1, 2: 2, 4: 3, 8: 4}[stop or 8]
        assert sorted(k for k in t.system_attrs if k.startswith("completed_rung_")) == \
            [f"completed_rung_{r}" for r in range(reached)]
    assert trials[1].system_attrs["completed_rung_0"] == 40.0


@pytest.mark.slow  # 40 trials through a journal
def test_asha_decisions_equal_the_rule_on_random_curves(tmp_path):
    curves = _random_curves(40, seed=5)
    expected = dict(enumerate(asha_simulate(curves)))
    assert sum(v is None for v in expected.values()) >= 3  # not all stopped
    assert {v for v in expected.values()} >= {1, 2, 4}
    assert drive_asha(str(tmp_path / "asha.log"), curves) == expected


@pytest.mark.slow  # 60 trials through journals
def test_asha_resumes_from_storage_with_new_objects(tmp_path):
    curves = _random_curves(30, seed=11)
    whole = drive_asha(str(tmp_path / "whole.log"), curves)
    journal = str(tmp_path / "split.log")
    first = drive_asha(journal, curves, 0, 13)
    assert first == {k: v for k, v in whole.items() if k < 13}
    assert drive_asha(journal, curves, 13) == whole  # a new study + storage object on the file


@pytest.mark.slow  # a subprocess driver, killed
@pytest.mark.parametrize("hang_epoch", [1, 3])
def test_asha_after_driver_is_killed_mid_trial(tmp_path, hang_epoch):
    """A driver process is SIGKILLed inside curve 10 (before it reports epoch
    ``hang_epoch``); a new driver marks the dead trial FAIL (``recover_stale``)
    and reruns curve 10 onwards.  Decisions follow the storage's rung records:
    the dead trial's records (epochs before the kill) stay in the competition."""
    curves = _random_curves(24, seed=3)
    h = 10
    curves[h] = [100.0] * 8  # promoted at every rung, so the kill point is reached
    journal, marker = tmp_path / "asha.log", tmp_path / "hung"
    args = {"journal": str(journal), "curves": curves, "hang": [h, hang_epoch], "marker": str(marker)}
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen([sys.executable, str(HELPER), "asha", json.dumps(args)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        def driver_alive():
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()

        wait_for(marker.exists, "the driver reaching the kill point", check=driver_alive)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL

    study = open_asha_study(str(journal))
    (dead,) = study.get_trials(states=(TrialState.RUNNING,))
    assert dead.number == int(marker.read_text()) and dead.user_attrs["curve"] == h
    assert sorted(dead.intermediate_values) == list(range(1, hang_epoch))
    assert recover_stale(study, f"journal:{journal}") == 1
    assert study.get_trials()[dead.number].state == TrialState.FAIL

    decisions = drive_asha(str(journal), curves, start=h)
    sim = asha_simulate(curves[:h] + [curves[h][:hang_epoch - 1]] + curves[h:])
    assert decisions == dict(enumerate(sim[:h] + sim[h + 1:]))
    uninterrupted = dict(enumerate(asha_simulate(curves)))
    if hang_epoch == 1:  # nothing recorded before the kill: exactly the uninterrupted run
        assert decisions == uninterrupted
    else:  # (these curves make the dead trial's two records change a later decision)
        assert decisions != uninterrupted


@pytest.mark.slow  # 9 trials of 8 epochs
def test_objective_prunes_like_the_rule(tmp_path, fake_trainer):
    """The real objective / worker loop with known learning curves (FakeTrainer):
    the hand-computed stops (none at the last epoch), ``stopped_at`` set,
    scores = last value."""
    fake_trainer.curve_for = staticmethod(
        lambda number, graph: HAND_CURVES[number] if number < 8 else [0.0] * 8)
    space = write_space(tmp_path / "hand.yaml", nodes=3, gates=["through", "linear"])
    study = journal_study(tmp_path / "out", "hand")
    for bits in itertools.product(["through", "linear"], repeat=3):  # 8 distinct graphs
        study.enqueue_trial(gate_params(3, label_node0=bits[0], node1_node0=bits[1],
                                        node2_node0=bits[2]))
    result = search(space, **tiny(tmp_path / "out", trials=9, epochs=8, study="hand"))
    trials = trials_of(tmp_path / "out", "hand")
    assert result.trials == 9 and fake_trainer.built[:8] == [f"{i:05d}" for i in range(8)]
    assert dict(enumerate(asha_simulate(HAND_CURVES, last=8))) == OBJECTIVE_STOPS
    for t in trials[:8]:
        stop = OBJECTIVE_STOPS[t.number]
        if stop is None:
            assert t.state == TrialState.COMPLETE and t.value == HAND_CURVES[t.number][-1]
            assert "stopped_at" not in t.user_attrs
        else:
            assert t.state == TrialState.PRUNED and t.user_attrs["stopped_at"] == stop
            assert t.last_step == stop
    rows = {r["number"]: r for r in status("hand", out=str(tmp_path / "out"))["leaderboard"]}
    assert all(rows[n]["score"] == HAND_CURVES[n][(OBJECTIVE_STOPS[n] or 8) - 1] for n in range(8))
    assert "completed_rung_3" not in trials[0].system_attrs  # epoch 8 is no rung here
    assert result.best_number == 7 and result.best_score == 90.0


# ---------------------------------------------------------- real search (1 worker)
@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    space = write_space(root / "e2e-space.yaml", nodes=2)
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        _patch_search_env(mp, root)
        result = search(space, **tiny(root / "out", trials=6, study="e2e"))
    return SimpleNamespace(root=root, space=space, out=root / "out", dir=root / "out" / "e2e",
                           result=result, printed=buf.getvalue(), trials=trials_of(root / "out", "e2e"))


@pytest.mark.slow  # e2e: a real search
def test_search_counts_and_outputs(e2e):
    r, trials = e2e.result, e2e.trials
    assert r.trials == 6 == len(trials) and [t.number for t in trials] == list(range(6))
    assert r.ran == 6  # the trials this (first) command added to the study
    assert all(t.state in DONE for t in trials)
    assert r.complete + r.pruned + r.rejected + r.failed == 6 and r.failed == 0
    assert f"6 trials: {r.complete} complete, {r.pruned} pruned" in e2e.printed
    with open(e2e.dir / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and sorted(int(x["number"]) for x in rows) == list(range(6))
    assert {"number", "state", "score", "epochs", "stopped_at", "duplicate_of", "rejected", "error",
            "graph_key", "models", "gates", "duration_s"} <= set(rows[0])
    scores = [float(x["score"]) for x in rows if x["score"]]
    assert scores == sorted(scores, reverse=True) and r.best_score == pytest.approx(scores[0])
    assert int(rows[0]["number"]) == r.best_number
    best = load_graph(e2e.dir / "best_graph.yaml")
    validate(best, model_options)
    assert best == Graph.from_dict(trials[r.best_number].user_attrs["graph"]) == r.best_graph
    assert best.digest(16) == trials[r.best_number].user_attrs["graph_key"]
    for name in ("best_graph.png", "curves.png"):
        assert (e2e.dir / name).read_bytes()[:8] == PNG
    saved = json.loads((e2e.dir / "settings.json").read_text())
    assert saved["trials"] == 6 and saved["data"] == TINY


@pytest.mark.slow  # e2e: a real search
def test_search_trials_are_canonical_and_recorded(e2e):
    for t in e2e.trials:
        graph = Graph.from_dict(t.user_attrs["graph"])
        assert t.user_attrs["graph_key"] == graph.digest(16)  # canonical form
        trial_dir = e2e.dir / "trials" / f"{t.number:05d}"
        if "rejected" in t.user_attrs or "duplicate_of" in t.user_attrs:
            assert not trial_dir.exists() and not t.intermediate_values
            continue
        rows = metrics_rows(trial_dir)
        assert [int(x["epoch"]) for x in rows] == sorted(t.intermediate_values)
        assert [float(x["val_acc:node0"]) for x in rows] == \
            [t.intermediate_values[e] for e in sorted(t.intermediate_values)]
        assert not any(k.startswith("test_acc") for k in rows[0])  # never evaluated on test
        if t.state == TrialState.COMPLETE:
            assert t.last_step == 4 and t.value == t.intermediate_values[4]


@pytest.mark.slow  # e2e: a real search
def test_search_prunes_by_the_asha_rule(e2e):
    trained = [t for t in e2e.trials if t.intermediate_values]
    curves = [[t.intermediate_values[e] for e in sorted(t.intermediate_values)] for t in trained]
    for t, stop in zip(trained, asha_simulate(curves, last=4)):
        if t.state == TrialState.PRUNED:
            assert stop == t.last_step == t.user_attrs["stopped_at"]
        else:
            assert stop is None and t.last_step == 4


@pytest.mark.slow  # e2e: a real search
def test_search_status_and_cli_status(e2e, capsys):
    got = status("e2e", out=str(e2e.out))
    assert got["summary"]["trials"] == 6 and len(got["leaderboard"]) == 6
    assert got["summary"]["running"] == 0
    capsys.readouterr()
    assert cli(["search", "status", "e2e", "--out", str(e2e.out)]) == 0
    out = capsys.readouterr().out
    s = e2e.result
    assert f"trials=6 complete={s.complete} pruned={s.pruned} rejected={s.rejected} failed=0 running=0" in out
    assert cli(["search", "status", "nope", "--out", str(e2e.out)]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


@pytest.mark.slow  # e2e + 4 more trained trials
def test_search_resume_adds_exactly_the_difference(e2e, tmp_path, built_trainers, capsys):
    out = tmp_path / "out"
    shutil.copytree(e2e.out, out)
    before = trials_of(out, "e2e")
    r = search(e2e.space, **tiny(out, trials=9, study="e2e"))
    assert "6/9 trials done" in capsys.readouterr().out
    after = trials_of(out, "e2e")
    assert r.trials == 9 and [t.number for t in after] == list(range(9))
    assert [(t.state, t.value) for t in after[:6]] == [(t.state, t.value) for t in before]
    assert all(t.state in DONE for t in after)
    built_trainers.clear()
    r = search(e2e.space, **tiny(out, trials=9, study="e2e"))  # already complete: nothing runs
    assert r.trials == 9 and built_trainers == [] and "9/9 trials done" in capsys.readouterr().out
    # the same through the CLI
    assert cli(cli_search_args(e2e.space, out, "e2e", 10, 4)) == 0
    assert len(trials_of(out, "e2e")) == 10


@pytest.mark.slow  # e2e: a real search
def test_search_resume_with_other_settings_is_refused(e2e, tmp_path, built_trainers):
    out = tmp_path / "out"
    shutil.copytree(e2e.out, out)
    other = write_space(tmp_path / "other-space.yaml", nodes=3)
    for kw in (dict(space=other), dict(epochs=3), dict(data="synthetic")):
        args = tiny(out, trials=8, study="e2e", **{k: v for k, v in kw.items() if k != "space"})
        with pytest.raises(ValueError, match="was created with .*--study") as exc:
            search(kw.get("space", e2e.space), **args)
        assert "e2e" in str(exc.value)
    assert built_trainers == [] and len(trials_of(out, "e2e")) == 6


@pytest.mark.slow  # e2e + two training runs
def test_retrain_reports_test_accuracy(e2e, tmp_path):
    settings = SearchSettings(space=e2e.space, data=TINY, epochs=4, study="e2e", out=str(tmp_path),
                              config=dict(TINY_CONFIG))
    got = retrain(e2e.result, settings, seeds=2, epochs=1)
    assert got["seeds"] == 2 and len(got["test_acc"]) == 2
    assert all(0.0 <= a <= 100.0 for a in got["test_acc"])
    assert json.loads((tmp_path / "e2e" / "retrain.json").read_text())["graph_key"] == \
        e2e.result.best_graph.digest(16)


# -------------------------------------------------------- two local workers
@pytest.mark.slow  # subprocess workers
def test_two_local_workers_on_one_journal(tmp_path):
    """Two spawned workers on one journal; each waits, inside its first trained
    trial, until the other is inside one too (or has ended): they provably run
    trials side by side, however slow the machine."""
    space = write_space(tmp_path / "two.yaml", nodes=2, gates=["through", "cutoff"])
    kw = tiny(tmp_path / "out", trials=8, epochs=3, workers=2, study="two")
    proc = subprocess.run([sys.executable, str(HELPER), "search", json.dumps({"space": space, **kw})],
                          env=child_env(tmp_path, KTGFAST_TEST_BARRIER=f"{tmp_path / 'barrier'}:2"),
                          capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT trials=8" in proc.stdout and "exited abnormally" not in proc.stdout
    trials = trials_of(tmp_path / "out", "two")
    assert [t.number for t in trials] == list(range(8))  # exact, unique
    assert all(t.state in DONE for t in trials), [t.state for t in trials]
    tdir = tmp_path / "out" / "two" / "trials"
    trained = [t for t in trials if "rejected" not in t.user_attrs and "duplicate_of" not in t.user_attrs]
    for t in trained:  # no lost results: every epoch reported is the trainer's own
        rows = metrics_rows(tdir / f"{t.number:05d}")
        assert [float(x["val_acc:node0"]) for x in rows] == \
            [t.intermediate_values[e] for e in sorted(t.intermediate_values)]
    for t in trials:
        if "duplicate_of" in t.user_attrs:  # answered from the earlier trial, not trained
            src = trials[t.user_attrs["duplicate_of"]]
            assert not t.intermediate_values  # never trained, never reported
            if t.state == TrialState.COMPLETE:  # its twin had completed: same score
                assert src.state == TrialState.COMPLETE and t.value == src.value
            else:  # its twin was pruned or still running in the other worker
                assert t.state == TrialState.PRUNED and t.value is None
            assert src.user_attrs["graph_key"] == t.user_attrs["graph_key"]
            assert not (tdir / f"{t.number:05d}").exists()
    for a, b in itertools.combinations(trained, 2):  # no finished graph trained again
        if a.user_attrs["graph_key"] == b.user_attrs["graph_key"]:
            assert not (a.state == TrialState.COMPLETE and a.datetime_complete <= b.datetime_start)
    # the two workers really ran side by side (both signed in to the barrier)
    assert len(list((tmp_path / "barrier").glob("worker-*"))) == 2
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
               for a, b in itertools.combinations(trials, 2))


# ------------------------------------------------ rejected, duplicates, NaN
def test_graphs_whose_target_never_learns_are_rejected_before_any_model(tmp_path, monkeypatch,
                                                                        built_trainers, capsys):
    models = []
    build = kmodels.build_model
    monkeypatch.setattr(kmodels, "build_model", lambda *a, **k: models.append(a) or build(*a, **k))
    space = write_space(tmp_path / "cut.yaml", nodes=2, gates=["cutoff"])
    r = search(space, **tiny(tmp_path / "out", trials=3, study="cut"))
    assert (r.trials, r.rejected, r.pruned, r.complete) == (3, 3, 0, 0)
    assert "3 rejected" in capsys.readouterr().out
    for t in trials_of(tmp_path / "out", "cut"):
        assert t.state == TrialState.PRUNED and "target node 'node0' never learns" in t.user_attrs["rejected"]
    assert models == [] and built_trainers == []
    sdir = tmp_path / "out" / "cut"
    assert not (sdir / "trials").exists()
    assert not (sdir / "best_graph.yaml").exists() and r.best_graph is None
    with open(sdir / "leaderboard.csv") as f:
        assert all(row["rejected"] for row in csv.DictReader(f))


@pytest.mark.slow  # a real search with pretraining
def test_enqueued_invalid_graph_is_rejected_and_counted(tmp_path, built_trainers):
    out = tmp_path / "out"
    study = journal_study(out, "enq")
    study.enqueue_trial(gate_params(2, label_node0="cutoff", node1_node0="cutoff"))  # target frozen
    study.enqueue_trial(gate_params(2))
    # an auxiliary node without incoming edges is a frozen teacher: pretrained, not rejected
    study.enqueue_trial(gate_params(2, label_node1="cutoff", node0_node1="cutoff"))
    r = search(write_space(tmp_path / "s.yaml", nodes=2, gates=["through", "cutoff"]),
               **tiny(out, trials=4, study="enq"))
    t = trials_of(out, "enq")
    assert r.trials == 4 and r.rejected >= 1
    assert t[0].state == TrialState.PRUNED and "never learns" in t[0].user_attrs["rejected"]
    assert "00000" not in built_trainers and not (out / "enq" / "trials" / "00000").exists()
    assert t[1].state == TrialState.COMPLETE and "rejected" not in t[1].user_attrs
    assert "rejected" not in t[2].user_attrs and t[2].intermediate_values
    assert list((tmp_path / "cache" / "pretrained").glob("*.pt"))  # pretrained into $KTGFAST_CACHE
    assert status("enq", out=str(out))["summary"]["rejected"] == r.rejected


@pytest.mark.slow  # a real search
def test_duplicate_graph_is_not_trained_twice(tmp_path, built_trainers):
    out = tmp_path / "out"
    study = journal_study(out, "dup")
    same = gate_params(2, label_node1="linear")
    study.enqueue_trial(same)
    study.enqueue_trial(same)
    r = search(write_space(tmp_path / "s.yaml", nodes=2), **tiny(out, trials=3, study="dup"))
    t = trials_of(out, "dup")
    assert t[0].state == TrialState.COMPLETE  # the first trained trial is always promoted
    assert t[1].state == TrialState.COMPLETE and t[1].user_attrs["duplicate_of"] == 0
    assert t[1].value == t[0].value and t[1].user_attrs["graph_key"] == t[0].user_attrs["graph_key"]
    assert not t[1].intermediate_values and "00001" not in built_trainers
    assert not (out / "dup" / "trials" / "00001").exists()
    assert r.duplicates >= 1 and r.trials == 3


def test_duplicate_of_a_pruned_trial_is_not_trained_again(tmp_path, fake_trainer):
    fake_trainer.curve_for = staticmethod(
        lambda n, g: [80.0] * 4 if edge_gate(g, "node1", "node0") == "through" else [50.0] * 4)
    out = tmp_path / "out"
    study = journal_study(out, "dp")
    good, bad = gate_params(2), gate_params(2, node1_node0="linear")
    for p in (good, bad, bad):
        study.enqueue_trial(p)
    search(write_space(tmp_path / "s.yaml", nodes=2, gates=["through", "linear"]),
           **tiny(out, trials=4, study="dp"))
    t = trials_of(out, "dp")
    assert t[1].state == TrialState.PRUNED and t[1].user_attrs["stopped_at"] == 1
    assert "00002" not in fake_trainer.built
    assert t[2].user_attrs.get("duplicate_of") == 1


def test_enqueued_trials_that_fill_the_budget_are_run(tmp_path, fake_trainer):
    out = tmp_path / "out"
    study = journal_study(out, "wq")
    study.enqueue_trial(gate_params(2))
    study.enqueue_trial(gate_params(2, node1_node0="linear"))
    r = search(write_space(tmp_path / "s.yaml", nodes=2, gates=["through", "linear"]),
               **tiny(out, trials=2, study="wq"))
    assert [t.state for t in trials_of(out, "wq")] != [TrialState.WAITING] * 2
    assert fake_trainer.built == ["00000", "00001"] and r.complete + r.pruned == 2


@pytest.mark.slow  # a real search
def test_nan_trial_fails_and_the_others_complete(tmp_path, monkeypatch, capsys):
    step = Trainer.train_step

    def nan_step(self, x, y):
        loss = step(self, x, y)
        return torch.full_like(loss, float("nan")) if Path(self.config.out).name == "00002" else loss

    monkeypatch.setattr(Trainer, "train_step", nan_step)
    out = tmp_path / "out"
    study = journal_study(out, "nan")
    for p in (gate_params(2), gate_params(2, label_node1="linear"), gate_params(2, node0_node1="linear"),
              gate_params(2, node1_node0="linear")):
        study.enqueue_trial(p)
    r = search(write_space(tmp_path / "s.yaml", nodes=2, gates=["through", "linear"]),
               **tiny(out, trials=5, study="nan"))
    t = trials_of(out, "nan")
    assert r.trials == 5 and r.failed == 1
    assert t[2].state == TrialState.FAIL and "NaN" in t[2].user_attrs["error"]
    assert not t[2].intermediate_values
    assert all(x.state in DONE for i, x in enumerate(t) if i != 2)
    assert r.best_number != 2
    assert status("nan", out=str(out))["summary"]["failed"] == 1


# --------------------------------------------------------- honest protocol
class PoisonSplit:
    """A test split that records (and refuses) every use."""

    def __init__(self, log: list):
        object.__setattr__(self, "_log", log)

    def _touch(self, what):
        object.__getattribute__(self, "_log").append(what)
        raise AssertionError(f"the search read the test split ({what})")

    def __getattribute__(self, name):
        if name in ("_touch", "__class__", "__repr__"):
            return object.__getattribute__(self, name)
        return object.__getattribute__(self, "_touch")(name)

    def __len__(self):
        return self._touch("len")

    def __iter__(self):
        return self._touch("iter")

    def __bool__(self):
        return self._touch("bool")

    def __getitem__(self, i):
        return self._touch("getitem")

    def __repr__(self):
        return "<test split: not for searches>"


@pytest.mark.slow  # a real search
def test_search_never_reads_the_test_split(tmp_path, monkeypatch):
    touched: list = []
    real = kdata.get_dataset
    monkeypatch.setattr(kdata, "get_dataset",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), test=PoisonSplit(touched)))
    seen = []
    init = Trainer.__init__

    def recording(self, graph, data, config=None, **kw):
        seen.append((data.test, list(config.eval_splits), data.train.ids.tolist(), data.val.ids.tolist()))
        return init(self, graph, data, config, **kw)

    monkeypatch.setattr(Trainer, "__init__", recording)
    out = tmp_path / "out"
    journal_study(out, "honest").enqueue_trial(gate_params(2, label_node1="cutoff", node0_node1="cutoff"))
    r = search(write_space(tmp_path / "s.yaml", nodes=2, gates=["through", "cutoff"]),
               **tiny(out, trials=3, epochs=2, study="honest"))
    assert r.trials == 3 and touched == []
    assert len(seen) >= 2  # the frozen teacher's pretraining and the trial itself, at least
    for test, splits, train_ids, val_ids in seen:
        assert test is None and "test" not in splits
        assert len(val_ids) == 64 and not set(train_ids) & set(val_ids)
        assert set(train_ids) | set(val_ids) == set(range(256))  # ids 256.. are the test split


def test_search_view_carves_validation_and_drops_test(tmp_path):
    ds = kdata.get_dataset(TINY)
    assert ds.val is None and len(ds.test) == 64
    for size in (64, 0.25):
        view = search_view(ds, size, seed=0)
        assert view.test is None and len(view.val) == 64 and len(view.train) == 192
        assert torch.bincount(view.val.labels).tolist() == [16] * 4  # stratified
        assert not set(view.train.ids.tolist()) & set(view.val.ids.tolist())
    assert search_view(ds, 64, 0).val.ids.tolist() == search_view(ds, 64, 0).val.ids.tolist()
    with pytest.raises(ValueError, match="'tinysyn' has no validation split: pass --val-size"):
        search_view(ds, None, 0)
    with_val = kdata.get_dataset(TINY, val_size=32)
    view = search_view(with_val, None, 0)
    assert view.val is with_val.val and view.test is None
    with pytest.raises(ValueError, match="no validation split"):
        search(write_space(tmp_path / "s.yaml"), **tiny(tmp_path / "out", val_size=None, study="noval"))
    assert not (tmp_path / "out").exists()  # refused before any study was created


@pytest.mark.slow  # a real search
def test_cli_val_size_accepts_a_count(tmp_path, capsys):
    space = write_space(tmp_path / "s.yaml", nodes=2)
    args = cli_search_args(space, tmp_path / "out", "count", 1, 1)
    args[args.index("--val-size") + 1] = "64"
    assert cli(args) == 0, capsys.readouterr().err


@pytest.mark.slow  # a real search
def test_builtin_space_runs_on_synthetic(tmp_path):
    r = search("ktg-4gates-2nodes", "synthetic", trials=2, epochs=1, val_size=0.25,
               out=str(tmp_path / "out"), config=dict(TINY_CONFIG))
    assert r.trials == 2


@pytest.mark.slow  # a real search
def test_ensemble_space_scores_the_ensemble(tmp_path):
    """ens-2nodes: the score of a trial is its ensemble node's val accuracy."""
    r = search("ens-2nodes", "synthetic", trials=3, epochs=1, val_size=0.25, seed=1,
               out=str(tmp_path / "out"), config=dict(TINY_CONFIG))
    study = optuna.load_study(study_name="ens-2nodes-synthetic", storage=open_storage(
        f"journal:{tmp_path / 'out' / 'ens-2nodes-synthetic' / 'journal.log'}", workers=1))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert r.trials == 3 and done
    for t in done:
        assert t.user_attrs["graph"]["target"] == "ensemble"
        assert t.value == t.intermediate_values[max(t.intermediate_values)]


# -------------------------------------------------------------------- storage
def test_storage_urls_and_errors(tmp_path):
    with pytest.raises(ValueError) as exc:
        open_storage(f"sqlite:///{tmp_path}/s.db", workers=2)
    msg = str(exc.value)
    assert "database is locked" in msg and "journal" in msg and "postgresql://" in msg
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/s.db", workers=1), optuna.storages.RDBStorage)
    with pytest.raises(ValueError) as exc:
        open_storage("mysql://ktg:s3cret@db.example/ktg")
    msg = str(exc.value)
    assert "unsupported storage" in msg and "s3cret" not in msg
    assert all(form in msg for form in ("journal:PATH", "postgresql://", "sqlite:///"))
    assert describe("postgresql://ktg:s3cret@10.1.2.3:5432/db") == "postgresql://***@10.1.2.3:5432/db"
    assert describe("journal:/a/b.log") == "journal:/a/b.log"
    assert resolve_url(None, Path("a/b")) == "journal:a/b/journal.log"
    assert resolve_url("postgresql://h/db", Path("a")) == "postgresql://h/db"


@pytest.mark.slow  # a real search
def test_sqlite_with_two_workers_is_refused(tmp_path, built_trainers, capsys):
    space = write_space(tmp_path / "s.yaml", nodes=2)
    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(ValueError, match="database is locked"):
        search(space, **tiny(tmp_path / "out", workers=2, storage=url, study="sq"))
    assert cli(cli_search_args(space, tmp_path / "out", "sq", 2, 1, "--storage", url, "--workers", "2")) == 2
    err = capsys.readouterr().err
    assert "database is locked" in err and "journal" in err and "Traceback" not in err
    assert built_trainers == []
    # one worker on SQLite is fine, and status finds it through --storage
    r = search(space, **tiny(tmp_path / "out", trials=2, epochs=1, storage=url, study="sq"))
    assert r.trials == 2
    assert status("sq", out=str(tmp_path / "elsewhere"), storage=url)["summary"]["trials"] == 2


def test_postgres_url_errors_hide_the_password():
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    url = f"postgresql+psycopg2://ktg:s3cret@127.0.0.1:{_free_port()}/ktg"
    with pytest.raises(ValueError, match="cannot connect") as exc:
        open_storage(url)
    msg = str(exc.value)
    assert "s3cret" not in msg and "Connection refused" in msg and describe(url) in msg
    assert "\n" not in msg and "allowed: journal:PATH" in msg


# ----------------------------------------------------------------- PostgreSQL
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]),
                    reverse=True):
        if os.access(f"{d}/initdb", os.X_OK) and os.access(f"{d}/pg_ctl", os.X_OK):
            return d
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return str(Path(initdb).resolve().parent)
    return None


def _install_postgres() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def pg_url():
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth); its URL."""
    required = os.environ.get("KTGFAST_INSTALL_POSTGRES") == "1"

    def unavailable(why: str):
        (pytest.fail if required else pytest.skip)(f"PostgreSQL tests: {why}")

    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("psycopg2 is not installed (pip install -e '.[test]')")
    bindir = _pg_bindir()
    if bindir is None and required:
        _install_postgres()
        bindir = _pg_bindir()
    if bindir is None:
        unavailable("no initdb/pg_ctl (set KTGFAST_INSTALL_POSTGRES=1 to apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' user to run the server")
        if shutil.which("runuser") is None:
            unavailable("running as root and there is no runuser to start the server as 'postgres'")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="ktgfast-pg-"))
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()

    def run(*cmd, check=True):
        proc = subprocess.run(as_user + [str(c) for c in cmd], capture_output=True, text=True,
                              timeout=WAIT_S)
        if check and proc.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            pytest.fail(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}{proc.stderr}{log}")
        return proc

    started = False
    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        opts = (f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=60")
        run(f"{bindir}/pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", str(int(WAIT_S)), "-o", opts,
            "start")
        started = True
        run(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "ktg")
        yield f"postgresql://postgres@127.0.0.1:{port}/ktg"
    finally:
        if started:
            run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


def psycopg2_url(url: str) -> str:
    """``postgresql://`` spelled with the driver the project installs (psycopg2):
    SQLAlchemy >= 2.1 maps a bare ``postgresql://`` to psycopg 3 (see the xfail
    test_postgres_plain_url_opens_the_server)."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def _snapshot(url: str, name: str) -> list:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


PG_TRIALS, PG_HEARTBEAT_S, PG_GRACE_S = 6, 1, 6


@pytest.fixture(scope="module")
def pg_killed(pg_url, tmp_path_factory):
    """Two ``ktgfast search`` processes (one worker each, like two machines:
    each its own output folder, so neither sees the other's worker leases) work
    on one PostgreSQL study; one is SIGKILLed mid-trial, the other goes on
    (it can judge the dead trial by its heartbeat only); once the dead trial's heartbeat is stale
    (grace period 6 s here, through the helper's knobs) the same command is run
    once more.  Every step waits for an event: the worker to be killed hangs
    inside a trial and writes a marker; the other waits for that marker inside
    a trial of its own (so both run trials side by side); the restart waits
    until the storage reports the dead trial stale (or already failed)."""
    root = tmp_path_factory.mktemp("pg")
    pg_url = psycopg2_url(pg_url)
    space = write_space(root / "pg.yaml", nodes=2, gates=["through", "linear"])
    cmds = [[sys.executable, str(HELPER), "cli", *cli_search_args(
        space, root / out, "pgkill", PG_TRIALS, 3, "--storage", pg_url, "--workers", "1")]
        for out in ("out", "out-b")]
    cmd = cmds[0]
    env = child_env(root, KTGFAST_TEST_HEARTBEAT_S=PG_HEARTBEAT_S, KTGFAST_TEST_GRACE_S=PG_GRACE_S)
    marker = root / "hung"
    to_kill = {**env, "KTGFAST_TEST_HANG": str(marker)}
    survivor = {**env, "KTGFAST_TEST_AWAIT": str(marker)}
    logs = [open(root / f"worker{i}.log", "w") for i in range(2)]
    procs = [subprocess.Popen(c, env=e, stdout=log, stderr=subprocess.STDOUT)
             for c, e, log in zip(cmds, (to_kill, survivor), logs)]
    watch = optuna.storages.RDBStorage(pg_url, heartbeat_interval=PG_HEARTBEAT_S,
                                       grace_period=PG_GRACE_S)

    def to_kill_alive():
        assert procs[0].poll() is None, "\n".join((root / f"worker{i}.log").read_text() for i in range(2))

    try:
        wait_for(marker.exists, "the worker to be killed hanging inside a trial", check=to_kill_alive)
        hung = int(marker.read_text())
        study = optuna.load_study(study_name="pgkill", storage=watch)
        running = study.get_trials(states=(TrialState.RUNNING,))
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        survivor_rc = procs[1].wait(timeout=WAIT_S)
        after_survivor = _snapshot(pg_url, "pgkill")
        # the dead trial stays RUNNING until a worker finds its heartbeat stale
        # (the survivor, if it still runs then, or the restart)
        dead_id = next(t._trial_id for t in running if t.number == hung)
        wait_for(lambda: dead_id in watch._get_stale_trial_ids(study._study_id)
                 or watch.get_trial(dead_id).state != TrialState.RUNNING,
                 "the killed worker's trial going stale", poll=0.2)
    finally:
        watch.engine.dispose()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    restart = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WAIT_S)
    return SimpleNamespace(url=pg_url, root=root, running_at_kill={t.number for t in running}, hung=hung,
                           killed_rc=procs[0].returncode, survivor_rc=survivor_rc,
                           survivor_log=(root / "worker1.log").read_text(), restart=restart,
                           after_survivor=after_survivor, final=_snapshot(pg_url, "pgkill"))


@pytest.mark.slow  # PostgreSQL, subprocess workers
def test_postgres_workers_share_the_study_and_recover_a_killed_trial(pg_killed, capsys):
    k = pg_killed
    assert k.killed_rc == -signal.SIGKILL
    assert k.survivor_rc == 0, k.survivor_log
    assert k.restart.returncode == 0, k.restart.stdout + k.restart.stderr
    assert 1 <= len(k.running_at_kill) <= 2  # at most one trial per worker
    numbers = [t.number for t in k.final]
    assert numbers == list(range(len(numbers)))
    assert len([t for t in k.after_survivor if t.state in DONE]) >= PG_TRIALS - 1
    for t in k.final:
        if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs:
            assert t.value == t.intermediate_values[max(t.intermediate_values)]
        elif "duplicate_of" in t.user_attrs:  # answered from its twin, never trained
            assert not t.intermediate_values
    # the dead worker's trial is failed by its stale heartbeat and queued again
    (dead,) = [t for t in k.final if t.state == TrialState.FAIL]
    assert dead.number in k.running_at_kill and dead.number == k.hung
    (retry,) = [t for t in k.final if t.system_attrs.get("retry_of") == dead.number]
    assert retry.params == dead.params and retry.number > dead.number
    assert not [t for t in k.final if t.state == TrialState.RUNNING]
    capsys.readouterr()
    assert cli(["search", "status", "pgkill", "--storage", k.url, "--out", str(k.root / "out")]) == 0
    assert f"trials={len(k.final)}" in capsys.readouterr().out


@pytest.mark.slow  # PostgreSQL, subprocess workers
def test_postgres_study_finishes_after_a_worker_is_killed(pg_killed):
    final = pg_killed.final
    assert not [t.number for t in final if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retried = {t.system_attrs.get("retry_of") for t in final} - {None}
    counted = [t for t in final if not (t.state == TrialState.FAIL and t.number in retried)]
    assert len(counted) == PG_TRIALS and all(t.state in DONE for t in counted)


@pytest.mark.slow  # PostgreSQL
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_postgres_status_shows_a_trial_with_a_stale_heartbeat_as_orphaned(pg_url, tmp_path, monkeypatch,
                                                                         capsys):
    """A worker on another machine (no lease here) stops beating: once its
    heartbeat is older than the grace period, status shows its trial ORPHANED."""
    monkeypatch.setattr(storage_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(storage_mod, "GRACE_S", 1)
    url = psycopg2_url(pg_url)
    storage = open_storage(url)
    try:
        study = optuna.create_study(study_name="stale", storage=storage, direction="maximize")
        trial = study.ask()
        storage.set_trial_system_attr(trial._trial_id, WORKER, {"lease": "elsewhere-7-x", "host": "elsewhere",
                                                                "pid": 7})
        storage.record_heartbeat(trial._trial_id)
        wait_for(lambda: trial._trial_id in storage._get_stale_trial_ids(study._study_id),
                 "the heartbeat going stale", poll=0.2)
        capsys.readouterr()
        seen = status("stale", out=str(tmp_path), storage=url)
        assert seen["orphaned"] == {0: "heartbeat of process 7 on elsewhere stale"}
        assert (seen["summary"]["running"], seen["summary"]["orphaned"]) == (0, 1)
        assert "trial 0: ORPHANED, RUNNING in the storage but heartbeat of process 7 on elsewhere stale" \
            in capsys.readouterr().out
        storage.record_heartbeat(trial._trial_id)  # beating again: running, not orphaned
        assert status("stale", out=str(tmp_path), storage=url)["summary"]["orphaned"] == 0
    finally:
        storage.engine.dispose()


@pytest.mark.slow  # PostgreSQL
def test_postgres_plain_url_opens_the_server(pg_url):
    storage = open_storage(pg_url)
    try:
        assert optuna.create_study(study_name="plain", storage=storage).study_name == "plain"
    finally:
        storage.engine.dispose()
