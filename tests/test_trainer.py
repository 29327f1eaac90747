"""The KTG trainer: equivalence with a plain per-node reference trainer, frozen
teachers and their pretraining cache, cutoff edges, checkpoints and resume,
NaN handling, configuration errors, presets, run-folder outputs, and a small
DML-vs-vanilla measurement on MNIST-5k.

Everything runs on the CPU with tiny synthetic data (8x8 grey images, 4
classes) and tiny models, so the whole module takes well under a minute.
"""
from __future__ import annotations

import csv
import inspect
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

import ktgfast.models
import torch.nn as nn
import yaml

from ktgfast.train.metrics import TIMING_COLUMNS
from ktgfast import reference
from ktgfast.cli import main as cli
from ktgfast.data import TensorLoader, get_dataset
from ktgfast.graph import (PRESETS, Edge, Gate, Graph, GraphError, Node, get_preset,
                           list_presets, load_graph, validate)
from ktgfast.models import build_model, list_models
from ktgfast.train import NonFiniteLossError, TrainConfig, Trainer
from ktgfast.train import checkpoint as ckpt
from ktgfast.train.pretrain import cache_dir, pretrain_key
from support.data import tiny_data  # conftest's ``data`` fixture is tiny_data()

MLP8 = {"image_size": 8, "hidden": 16}
CLASSES = 4


# ----------------------------------------------------------------- helpers
def make_config(tmp_path, name: str = "run", **kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=32, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
                schedule="constant", augment="none", tensorboard=False, device="cpu",
                progress_bar=False, out=str(tmp_path / name),
                pretrain_cache=str(tmp_path / "cache"))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these models are far too small to gain from two, and
    on a shared CPU a second spinning OpenMP thread makes steps up to 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    """Never touch ~/.cache/ktgfast, even from a test that forgets pretrain_cache."""
    monkeypatch.setenv("KTGFAST_CACHE", str(tmp_path / "env-cache"))


def mlp(name: str, **kw) -> Node:
    return Node(name, "mlp", dict(MLP8), **kw)


def two_node_graph(extra: list[Edge] = ()) -> Graph:
    edges = [Edge("label", "a", "ce"), Edge("label", "b", "ce"), Edge("a", "b", "kl", T=2.0)]
    return Graph([mlp("a"), mlp("b")], edges + list(extra), "a")


def mixed_graph() -> Graph:
    """Three nodes (two MLPs and a BN CNN), every gate kind that changes over
    training or per sample, every loss kind, label edges with and without gates."""
    nodes = [mlp("a"), mlp("b"), Node("c", "cnn_small")]
    edges = [
        Edge("label", "a", "ce"),
        Edge("label", "a", "kl", gate=Gate("linear"), weight=0.3),
        Edge("label", "b", "ce", weight=0.7),
        Edge("label", "c", "ce"),
        Edge("b", "a", "kl", T=2.0),
        Edge("a", "b", "kl", gate=Gate("correct")),
        Edge("a", "c", "kl", gate=Gate("sine", f=0.5, phi=1.0), T=3.0, weight=0.5),
        Edge("b", "c", "cos", gate=Gate("neg_linear"), weight=0.1),
        Edge("c", "a", "kl", gate=Gate("linear"), t2=False, T=2.0),
        Edge("c", "b", "pl", gate=Gate("threshold", tau=0.4), weight=0.2),
    ]
    return Graph(nodes, edges, "a")


def states(trainer) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in trainer.models]


def assert_states_equal(a, b):
    """Bitwise equality of lists of state dicts."""
    assert len(a) == len(b)
    for i, (sa, sb) in enumerate(zip(a, b)):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"model {i} {k} differs"


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def interrupt_after(trainer, epoch: int):
    """Make ``trainer.fit()`` stop (KeyboardInterrupt) right after ``epoch``."""
    run_epoch = trainer.train_epoch

    def wrapped():
        row = run_epoch()
        if trainer.epoch == epoch:
            raise KeyboardInterrupt
        return row

    trainer.train_epoch = wrapped


# ------------------------------------------------- 1. reference equivalence
def reference_fit(graph: Graph, init: list[dict], batches, data, config: TrainConfig,
                  total_steps: int):
    """A plain KTG trainer: per node, L_t = sum of its incoming edges computed
    edge by edge with ``ktgfast.reference`` (sources detached), its own
    backward and its own SGD step."""
    models = []
    for node, state in zip(graph.nodes, init):
        m = build_model(node.model, data.num_classes, in_channels=data.channels, **node.options)
        m.to(state["fc.weight"].dtype).load_state_dict(state)
        models.append(m.train())
    opts = [torch.optim.SGD(m.parameters(), lr=config.lr, momentum=config.momentum,
                            nesterov=config.nesterov, weight_decay=config.weight_decay)
            for m in models]
    specs = graph.edge_specs()
    for k, (x, y) in enumerate(batches):
        progress = torch.tensor(k / (total_steps - 1), dtype=torch.float64)
        z = [m(x) for m in models]
        for t, (model, opt) in enumerate(zip(models, opts)):
            incoming = [s for s in specs if s.dst == t]
            logits = torch.stack([zj if j == t else zj.detach() for j, zj in enumerate(z)])
            loss_t = reference.gated_edge_loss(logits, y, incoming, progress,
                                               graph.reduction).node_loss[t]
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
    return models, opts


@pytest.mark.parametrize("reduction,dtype", [("mean", torch.float32), ("sum", torch.float32),
                                             ("mean", torch.float64)])
def test_fused_trainer_matches_plain_reference_trainer(tmp_path, data, reduction, dtype):
    """N steps of the fused trainer = N steps of per-node reference updates.

    fp32 (the trainer as it runs): the MLPs agree to ~1e-7, the BN CNN to ~1e-5
    (its conv amplifies the op's last-bit differences; BN running stats, sums of
    activations, get a looser bound).  fp64 (models and logits converted in
    place after construction; the op accumulates in fp64): agreement to ~1e-10,
    so any real difference in the math would show."""
    graph = mixed_graph()
    graph.reduction = reduction
    lr = 0.05 if reduction == "mean" else 0.05 / 32  # sum: 32x the gradient (batch 32)
    grad_scale = 1 if reduction == "mean" else 32
    fp64 = dtype == torch.float64
    cfg = make_config(tmp_path, epochs=2, lr=lr, weight_decay=1e-3,
                      eval_splits=[] if fp64 else ["val"])
    tr = Trainer(graph, data, cfg)
    if fp64:  # same Parameter objects (the optimizers hold them), fp64 data
        for i, m in enumerate(tr.models):
            m.double()
            tr.forwards[i] = lambda x, m=m: m(x.double())
    init = states(tr)
    batches = []
    for epoch in (1, 2):
        tr.train_loader.set_epoch(epoch)
        batches += [(x.clone().to(dtype), y.clone()) for x, y, _ in tr.train_loader]
    assert len(batches) == tr.total_steps == 2 * (192 // 32)
    # the epochs differ (a fresh order each epoch)
    assert not torch.equal(batches[0][1], batches[len(batches) // 2][1])

    tr.fit()
    models, opts = reference_fit(graph, init, batches, data, cfg, tr.total_steps)

    if fp64:
        tol = buf_tol = mom_tol = dict(atol=1e-9, rtol=1e-7)
    else:
        tol = dict(atol=1e-5, rtol=1e-4)
        buf_tol = dict(atol=1e-4, rtol=1e-3)
        mom_tol = dict(atol=2e-5 * grad_scale, rtol=1e-3)
    for i, (fused, plain) in enumerate(zip(tr.models, models)):
        fused_state = fused.state_dict()
        assert fused_state["fc.weight"].dtype == dtype
        assert not all(torch.equal(fused_state[k], v) for k, v in init[i].items()), \
            f"node {i} did not train"
        params = dict(plain.named_parameters())
        for k, v in plain.state_dict().items():
            torch.testing.assert_close(fused_state[k], v, **(tol if k in params else buf_tol),
                                       msg=lambda m: f"node {i} {k}: {m}")
    # the momentum buffers follow too
    for fused_opt, plain_opt in zip(tr.optimizers, opts):
        for p_f, p_r in zip(fused_opt.param_groups[0]["params"], plain_opt.param_groups[0]["params"]):
            torch.testing.assert_close(fused_opt.state[p_f]["momentum_buffer"],
                                       plain_opt.state[p_r]["momentum_buffer"], **mom_tol)


def test_trainer_uses_configured_optimizer_and_progress(tmp_path, data):
    cfg = make_config(tmp_path, epochs=3, lr=0.03, momentum=0.5, nesterov=False, weight_decay=0.0)
    tr = Trainer(mixed_graph(), data, cfg)
    assert len(tr.optimizers) == 3
    for opt in tr.optimizers:
        g = opt.param_groups[0]
        assert (g["lr"], g["momentum"], g["nesterov"], g["weight_decay"]) == (0.03, 0.5, False, 0.0)
    # progress k / (k_end - 1): the last step of the run has progress exactly 1
    assert tr.total_steps == 3 * 6 and tr.progress_div == tr.total_steps - 1


# ---------------------------------------------------------- 2. frozen nodes
def fresh_teacher_weights(path, perturb_bn: bool = True):
    torch.manual_seed(7)
    teacher = build_model("cnn_small", CLASSES, in_channels=1)
    if perturb_bn:  # non-default running stats, so a reset or an update would show
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    torch.save(teacher.state_dict(), path)
    return teacher.state_dict()


def test_frozen_teacher_with_weights_never_changes(tmp_path, data):
    saved = fresh_teacher_weights(tmp_path / "teacher.pt")
    graph = get_preset("kd", student="cnn_small", teacher="cnn_small",
                       teacher_weights=str(tmp_path / "teacher.pt"))
    tr = Trainer(graph, data, make_config(tmp_path, epochs=2))
    t = tr.names.index("teacher")
    teacher = tr.models[t]
    assert_states_equal([teacher.state_dict()], [saved])
    assert not any(p.requires_grad for p in teacher.parameters())
    optimized = {id(p) for o in tr.optimizers for g in o.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}

    seen = []
    teacher.register_forward_pre_hook(
        lambda mod, args: seen.append((mod.training, torch.is_grad_enabled())))
    student_before = states(tr)[tr.names.index("student")]
    tr.fit()

    evaluations = tr.config.epochs * len(tr.config.eval_splits)  # one batch each
    assert len(seen) == tr.total_steps + evaluations
    assert all(mode == (False, False) for mode in seen), "teacher ran in train mode or with grad"
    assert_states_equal([teacher.state_dict()], [saved])  # parameters and BN running stats
    student_after = states(tr)[tr.names.index("student")]
    assert not torch.equal(student_before["fc.weight"], student_after["fc.weight"])


def kd_mlp(teacher_weights=None) -> Graph:
    """The kd preset with 8-px MLPs (presets cannot pass model options)."""
    graph = get_preset("kd", student="mlp", teacher="mlp", teacher_weights=teacher_weights)
    graph.nodes = [replace(n, options=dict(MLP8)) for n in graph.nodes]
    return graph


def test_frozen_teacher_without_weights_is_pretrained_and_cached(tmp_path, data, capsys):
    graph = kd_mlp()
    cfg = make_config(tmp_path, "kd1")
    first = Trainer(graph, data, cfg)
    out = capsys.readouterr().out
    assert "has no weights: pretraining" in out
    cached = sorted(cache_dir(cfg).glob("*.pt"))
    assert len(cached) == 1
    assert cached[0].parent == tmp_path / "cache" / "pretrained"
    mtime = cached[0].stat().st_mtime_ns
    teacher_state = states(first)[first.names.index("teacher")]
    assert_states_equal([teacher_state], [torch.load(cached[0], weights_only=True)])
    # never a random teacher: it learned the labels (chance is 25 %)
    acc = first.evaluate("val")["teacher"]
    assert acc > 60, acc
    first.fit()
    assert_states_equal([states(first)[first.names.index("teacher")]], [teacher_state])

    # the same recipe reuses the cache: no second pretraining
    second = Trainer(graph, data, replace(cfg, out=str(tmp_path / "kd2")))
    out = capsys.readouterr().out
    assert "using cached label-only weights" in out and "pretraining" not in out
    assert sorted(cache_dir(cfg).glob("*.pt")) == cached
    assert cached[0].stat().st_mtime_ns == mtime
    assert_states_equal([states(second)[second.names.index("teacher")]], [teacher_state])

    # another recipe (learning rate) is another cache entry
    third = Trainer(graph, data, replace(cfg, out=str(tmp_path / "kd3"), lr=0.02))
    assert "has no weights: pretraining" in capsys.readouterr().out
    assert len(list(cache_dir(cfg).glob("*.pt"))) == 2
    key = lambda tr: pretrain_key(tr, tr.graph.node("teacher"))
    assert key(first) == key(second) != key(third)


def test_pretrain_key_covers_the_recipe(tmp_path, data):
    node = Node("teacher", "cnn_small", frozen=True)
    base = make_config(tmp_path)
    key = lambda cfg, n=node, d=data: pretrain_key(SimpleNamespace(config=cfg, data=d), n)
    k0 = key(base)
    # the teacher is pretrained with a fixed seed: one teacher per recipe, whatever
    # the student's seed (so searches do not pretrain it again for every trial)
    assert key(replace(base, out="elsewhere", tensorboard=True, log_every=3, seed=1)) == k0
    for change in [dict(lr=0.1), dict(epochs=2), dict(batch_size=16),
                   dict(weight_decay=0.0), dict(augment="crop")]:
        assert key(replace(base, **change)) != k0, change
    assert key(base, n=replace(node, model="mlp", options=dict(MLP8))) != k0
    assert key(base, n=replace(node, options={"pool": 2})) != k0


def test_pretrain_key_depends_on_the_data(tmp_path):
    node = Node("teacher", "cnn_small", frozen=True)
    cfg = make_config(tmp_path)
    key = lambda d: pretrain_key(SimpleNamespace(config=cfg, data=d), node)
    # cnn_small runs on any image size: 8 px and 16 px images are different data
    assert key(tiny_data(image_size=8)) != key(tiny_data(image_size=16))


def dropout_kd_graph() -> Graph:
    student = Node("student", "wrn28_2", {"dropout": 0.3, "width": 2})
    return Graph([student, Node("teacher", "mlp", dict(MLP8), frozen=True)],
                 [Edge("label", "student", "ce", weight=0.1),
                  Edge("teacher", "student", "kl", T=4.0, weight=0.9)], "student")


def test_runs_with_a_cached_teacher_are_reproducible(tmp_path, data):
    cfg = make_config(tmp_path, batch_size=64, eval_splits=["val"])
    Trainer(dropout_kd_graph(), data, replace(cfg, out=str(tmp_path / "warm")))  # fills the cache
    runs = []
    for name in ("one", "two"):
        tr = Trainer(dropout_kd_graph(), data, replace(cfg, out=str(tmp_path / name)))
        tr.fit()
        runs.append(states(tr))
    assert_states_equal(runs[0], runs[1])


def test_pretraining_a_teacher_does_not_change_the_run(tmp_path, data):
    graph = dropout_kd_graph()
    runs = []
    for name in ("miss", "hit"):
        tr = Trainer(graph, data, make_config(tmp_path, name, batch_size=64, eval_splits=["val"]))
        tr.fit()
        runs.append(states(tr))
    assert_states_equal(runs[0], runs[1])


# ----------------------------------------------------------- 3. cutoff edges
def test_cutoff_edges_have_no_effect(tmp_path, data):
    plain = two_node_graph()
    with_cutoff = two_node_graph([Edge("b", "a", "kl", gate=Gate("cutoff"), weight=5.0, T=3.0),
                                  Edge("label", "a", "ce", gate=Gate("cutoff")),
                                  Edge("a", "b", "cos", gate=Gate("cutoff"))])
    assert plain == with_cutoff  # the canonical form drops cutoff edges
    results = []
    for name, graph in (("plain", plain), ("cutoff", with_cutoff)):
        tr = Trainer(graph, data, make_config(tmp_path, name, epochs=2))
        row = tr.fit()
        results.append((states(tr), row))
    assert_states_equal(results[0][0], results[1][0])
    drop = TIMING_COLUMNS
    assert {k: v for k, v in results[0][1].items() if k not in drop} == \
        {k: v for k, v in results[1][1].items() if k not in drop}


def test_node_with_only_cutoff_edges_does_not_learn(tmp_path, data):
    graph = two_node_graph([Edge("a", "b", "kl", gate=Gate("cutoff"))])
    graph.edges = [e for e in graph.edges if e.dst != "b" or e.gate.kind == "cutoff"]
    weights = tmp_path / "b.pt"
    torch.manual_seed(3)
    torch.save(build_model("mlp", CLASSES, in_channels=1, **MLP8).state_dict(), weights)
    graph.nodes[1] = replace(graph.nodes[1], weights=str(weights))
    tr = Trainer(graph, data, make_config(tmp_path))
    assert tr.learning == [True, False] and len(tr.optimizers) == 1
    before = states(tr)
    tr.fit()
    assert_states_equal([before[1]], [states(tr)[1]])


# ------------------------------------------------------------------ 4. resume
def resume_graph() -> Graph:
    """BN, dropout (draws from the global RNG), a linear gate (progress)."""
    nodes = [Node("a", "cnn_small"), Node("b", "wrn28_2", {"width": 2, "dropout": 0.2}), mlp("c")]
    edges = [Edge("label", n, "ce") for n in "abc"]
    edges += [Edge("a", "b", "kl", gate=Gate("linear")), Edge("b", "a", "kl"),
              Edge("a", "c", "kl", gate=Gate("correct"))]
    return Graph(nodes, edges, "a")


def resume_config(tmp_path, name):
    # multistep: the learning rate drops after epoch 1; crop: augmentation RNG
    return make_config(tmp_path, name, epochs=2, schedule="multistep", milestones=[1],
                       augment="crop", pad=2, batch_size=64, eval_splits=["val"])


def optimizer_buffers(trainer):
    return [[o.state[p]["momentum_buffer"].clone() for p in o.param_groups[0]["params"]]
            for o in trainer.optimizers]


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("resume")
    full = Trainer(resume_graph(), data, resume_config(tmp, "full"))
    full.fit()

    part = Trainer(resume_graph(), data, resume_config(tmp, "part"))
    interrupt_after(part, 1)
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    assert ckpt.load(tmp / "part" / "checkpoint.pt")["epoch"] == 1
    resumed = Trainer(resume_graph(), data, resume_config(tmp, "part"), resume=True)
    assert resumed.epoch == 1
    resumed.fit()
    return full, resumed


def test_resume_continues_bitwise(resumed_runs):
    full, resumed = resumed_runs
    assert resumed.epoch == full.epoch == 2
    assert resumed.step_t.item() == full.step_t.item() == full.total_steps
    assert_states_equal(states(full), states(resumed))
    for bf, br in zip(optimizer_buffers(full), optimizer_buffers(resumed)):
        assert all(torch.equal(x, y) for x, y in zip(bf, br))
    assert [s.state_dict() for s in full.schedulers] == [s.state_dict() for s in resumed.schedulers]
    assert full.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.005)
    drop = TIMING_COLUMNS
    assert {k: v for k, v in full.history[-1].items() if k not in drop} == \
        {k: v for k, v in resumed.history[-1].items() if k not in drop}


def test_resume_keeps_every_metrics_row(resumed_runs):
    full, resumed = resumed_runs
    rows = read_csv(resumed.run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [r["epoch"] for r in read_csv(full.run_dir / "metrics.csv")] == ["1", "2"]
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_checkpoint_holds_everything(tmp_path, data):
    tr = Trainer(two_node_graph(), data, make_config(tmp_path, epochs=1))
    tr.fit()
    state = ckpt.load(tr.run_dir / "checkpoint.pt")
    assert {"epoch", "step", "models", "optimizers", "schedulers", "scaler", "rng", "graph_key",
            "config", "history"} <= set(state)
    assert state["epoch"] == 1 and state["step"] == tr.total_steps
    assert len(state["models"]) == 2 and len(state["optimizers"]) == 2
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert state["graph_key"] == tr.graph.key()
    assert TrainConfig.from_dict(state["config"]) == tr.config
    assert_states_equal(state["models"], states(tr))


def test_resume_rejects_another_graph(tmp_path, data):
    cfg = make_config(tmp_path)
    Trainer(two_node_graph(), data, cfg).fit()
    other = two_node_graph([Edge("b", "a", "kl")])
    with pytest.raises(ValueError, match="different graph"):
        Trainer(other, data, cfg, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(two_node_graph(), data, replace(cfg, out=str(tmp_path / "empty")), resume=True)


def cli_train(tmp_path, out, *extra):
    return cli(["train", "--graph", "dml", "--graph-arg", "model=cnn_small", "--data", "synthetic",
                "--out", str(tmp_path / out), "--eval-splits", "test", "--batch-size", "128",
                "--schedule", "constant", "--lr", "0.05", "--device", "cpu", "--tensorboard",
                "false", "--progress-bar", "false", "--pretrain-cache", str(tmp_path / "cache"),
                *extra])


@pytest.mark.slow
def test_cli_resume_matches_uninterrupted_run(tmp_path, capsys):
    # No ramp-up: a ramp's length is a fraction of the run, so raising --epochs
    # on resume stretches it (progress-dependent weights follow the new budget).
    flat = ("--graph-arg", "rampup=none")
    assert cli_train(tmp_path, "full", "--epochs", "2", *flat) == 0
    assert cli_train(tmp_path, "part", "--epochs", "1", *flat) == 0
    assert cli_train(tmp_path, "part", "--epochs", "2", "--resume", *flat) == 0
    out = capsys.readouterr().out
    assert "resumed" in out and "at epoch 1" in out
    full = ckpt.load(tmp_path / "full" / "checkpoint.pt")
    part = ckpt.load(tmp_path / "part" / "checkpoint.pt")
    assert full["epoch"] == part["epoch"] == 2 and full["step"] == part["step"]
    assert_states_equal(full["models"], part["models"])
    for of, op in zip(full["optimizers"], part["optimizers"]):
        for k in of["state"]:
            assert torch.equal(of["state"][k]["momentum_buffer"], op["state"][k]["momentum_buffer"])


# ------------------------------------------------------- 5. atomic checkpoint
@pytest.mark.parametrize("crash", [OSError("disk full (simulated)"), KeyboardInterrupt()])
def test_crash_while_saving_keeps_last_checkpoint(tmp_path, data, monkeypatch, crash):
    tr = Trainer(two_node_graph(), data, make_config(tmp_path, epochs=2))
    path = tr.run_dir / "checkpoint.pt"
    good = {}
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        f.flush()
        raise crash

    run_epoch = tr.train_epoch

    def epoch_then_break_disk():
        row = run_epoch()
        good["bytes"] = path.read_bytes()
        monkeypatch.setattr(torch, "save", crashing_save)
        return row

    tr.train_epoch = epoch_then_break_disk
    with pytest.raises(type(crash)):
        tr.fit()
    monkeypatch.setattr(torch, "save", real_save)

    assert path.read_bytes() == good["bytes"]
    state = ckpt.load(path)
    assert state["epoch"] == 1
    leftovers = [p.name for p in tr.run_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    # and the run goes on from it
    again = Trainer(two_node_graph(), data, make_config(tmp_path, epochs=2), resume=True)
    assert again.epoch == 1
    again.fit()
    assert ckpt.load(path)["epoch"] == 2


def test_truncated_checkpoint_gives_clear_error(tmp_path, data):
    cfg = make_config(tmp_path)
    Trainer(two_node_graph(), data, cfg).fit()
    path = tmp_path / "run" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="unreadable"):
        Trainer(two_node_graph(), data, cfg, resume=True)


# ------------------------------------------------------------------- 6. NaN
@pytest.mark.parametrize("log_every", [1, 4, 1000])
def test_nan_loss_names_node_and_step_and_keeps_checkpoint(tmp_path, data, log_every):
    bad_step = 8  # epoch 2 (6 steps per epoch), step 2 of it
    tr = Trainer(two_node_graph(), data, make_config(tmp_path, epochs=3, log_every=log_every))
    calls = {"n": 0}
    forward_b = tr.forwards[1]

    def poisoned(x):
        k = calls["n"]
        calls["n"] += 1
        z = forward_b(x)
        return z * float("nan") if k >= bad_step else z

    tr.forwards[1] = poisoned  # training forwards only; evaluation calls the models
    with pytest.raises(NonFiniteLossError) as info:
        tr.fit()
    msg = str(info.value)
    assert "'b'" in msg and "'a'" not in msg, msg  # a learns only from the label
    assert f"step {bad_step}" in msg and "epoch 2" in msg, msg
    assert "checkpoint" in msg and "(epoch 1)" in msg, msg

    state = ckpt.load(tr.run_dir / "checkpoint.pt")
    assert state["epoch"] == 1 and state["step"] == 6
    assert all(torch.isfinite(v).all() for s in state["models"] for v in s.values()
               if v.is_floating_point())
    # the good checkpoint resumes (with a healthy model again)
    again = Trainer(two_node_graph(), data, make_config(tmp_path, epochs=2), resume=True)
    assert again.epoch == 1
    again.fit()


def test_diverging_run_stops_before_any_checkpoint(tmp_path, data):
    tr = Trainer(two_node_graph(), data, make_config(tmp_path, lr=1e30, log_every=1))
    with pytest.raises(NonFiniteLossError, match=r"loss of node .*'a'.* at step \d+ \(epoch 1\)") \
            as info:
        tr.fit()
    assert "no checkpoint was written yet" in str(info.value)
    assert not (tr.run_dir / "checkpoint.pt").exists()


# ------------------------------------------------------------ 7. bad configs
def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def graph_dict(nodes=None, edges=None, target="a"):
    nodes = nodes if nodes is not None else [{"name": "a", "model": "cnn_small"},
                                             {"name": "b", "model": "cnn_small"}]
    edges = edges if edges is not None else [{"src": "label", "dst": "a", "loss": "ce"},
                                             {"src": "label", "dst": "b", "loss": "ce"}]
    return {"nodes": nodes, "edges": edges, "target": target}


BAD_GRAPHS = {
    "unknown model": (graph_dict(nodes=[{"name": "a", "model": "resnet33"}],
                                 edges=[{"src": "label", "dst": "a", "loss": "ce"}]),
                      "unknown model 'resnet33'"),
    "edge to missing node": (graph_dict(edges=[{"src": "label", "dst": "a", "loss": "ce"},
                                               {"src": "a", "dst": "ghost"}]),
                             "'ghost' is not a node"),
    "target frozen": (graph_dict(nodes=[{"name": "a", "model": "cnn_small", "frozen": True},
                                        {"name": "b", "model": "cnn_small"}],
                                 edges=[{"src": "label", "dst": "b", "loss": "ce"}]),
                      "target node 'a' never learns"),
    "zero nodes": (graph_dict(nodes=[], edges=[], target=None), "at least one model node"),
}


@pytest.fixture
def no_training(monkeypatch):
    """Building a model or running a step is a test failure: the error must come first."""
    def boom(*a, **k):
        raise AssertionError("training started for a bad configuration")

    monkeypatch.setattr(Trainer, "train_step", boom)
    monkeypatch.setattr(ktgfast.models, "build_model", boom)


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
def test_bad_graph_fails_before_training_api(tmp_path, data, no_training, case):
    raw, message = BAD_GRAPHS[case]
    with pytest.raises(GraphError, match=message):
        Trainer(Graph.from_dict(raw), data, make_config(tmp_path))
    assert not (tmp_path / "run").exists()


def cli_error(capsys, argv) -> str:
    assert cli(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("ktgfast train: error:"), err
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("case", sorted(BAD_GRAPHS))
def test_bad_graph_fails_before_training_cli(tmp_path, capsys, no_training, case):
    raw, message = BAD_GRAPHS[case]
    graph = write_yaml(tmp_path / "graph.yaml", raw)
    err = cli_error(capsys, ["train", "--graph", graph, "--data", "synthetic", "--out",
                             str(tmp_path / "run"), "--eval-splits", "test"])
    assert message in err
    assert not (tmp_path / "run").exists()


BAD_CLI = {
    "negative lr": (["--lr", "-1"], "--lr -1.0: allowed: a finite number > 0"),
    "zero epochs": (["--epochs", "0"], "--epochs 0: allowed: an integer >= 1"),
    "not a number": (["--lr", "fast"], "--lr fast: allowed: a number"),
    "unknown dataset": (["--data", "imagenet42"], "unknown dataset 'imagenet42'"),
    "eval split missing": (["--eval-splits", "val,test"], "has no val split"),
    "unknown preset": (["--graph", "dmll"], "neither a graph preset nor a YAML file"),
    "bad preset parameter": (["--graph-arg", "k=0"], "at least one node is needed"),
    "unknown preset parameter": (["--graph-arg", "nodes=3"], "has no parameter 'nodes'"),
    "unknown schedule": (["--schedule", "linear"], "--schedule linear: allowed: auto, multistep, cosine"),
    "missing config file": (["--config", "nope.yaml"], "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_CLI))
def test_bad_cli_config_fails_before_training(tmp_path, capsys, no_training, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    flags, message = BAD_CLI[case]
    base = {"--graph": "dml", "--data": "synthetic", "--out": str(tmp_path / "run"),
            "--eval-splits": "test"}
    for flag, value in zip(flags[::2], flags[1::2]):
        base[flag] = value
    argv = ["train"] + [x for kv in base.items() for x in kv]
    err = cli_error(capsys, argv)
    assert message in err, err
    assert not (tmp_path / "run").exists()


def test_unknown_key_in_config_yaml(tmp_path, capsys, no_training):
    cfg = write_yaml(tmp_path / "cfg.yaml", {"epochs": 1, "lerning_rate": 0.1})
    err = cli_error(capsys, ["train", "--config", cfg, "--data", "synthetic",
                             "--out", str(tmp_path / "run")])
    assert "cfg.yaml: unknown key 'lerning_rate'" in err and "allowed:" in err
    with pytest.raises(ValueError, match="unknown key 'lerning_rate'"):
        TrainConfig.from_yaml(cfg)


@pytest.mark.parametrize("values,message", [
    ({"lr": -1}, "config.lr"), ({"lr": float("nan")}, "config.lr"),
    ({"momentum": -0.1}, "config.momentum"), ({"batch_size": 0}, "config.batch_size"),
    ({"eval_splits": ["train"]}, r"config.eval_splits = \['train'\]; allowed: a list of val, test"),
    ({"amp": "fp8"}, "config.amp"), ({"epochs": 2.5}, "config.epochs"),
    ({"nesterov": "maybe"}, "config.nesterov"), ({"milestones": [0]}, "config.milestones"),
])
def test_trainconfig_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_trainconfig_rejects_bool_for_int_fields():
    with pytest.raises(ValueError, match="config.epochs"):
        TrainConfig(epochs=True).validate()  # the dataclass path rejects it ...
    with pytest.raises(ValueError, match="config.epochs"):
        TrainConfig.from_dict({"epochs": True})  # ... the YAML / dict path does not


def test_api_config_errors_before_training(tmp_path, data, no_training):
    with pytest.raises(ValueError, match="config.lr"):
        Trainer(two_node_graph(), data, make_config(tmp_path, lr=-1.0))
    with pytest.raises(ValueError, match="no val split"):
        Trainer(two_node_graph(), replace(data, val=None), make_config(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        Trainer(two_node_graph(), "nope", make_config(tmp_path))


def test_batch_larger_than_train_split(tmp_path, data):
    with pytest.raises(ValueError, match="larger than the training split"):
        Trainer(two_node_graph(), data, make_config(tmp_path, batch_size=1000))


def test_weights_that_do_not_fit_are_named(tmp_path, data):
    weights = tmp_path / "w.pt"
    torch.save(build_model("cnn_small", CLASSES, in_channels=1).state_dict(), weights)
    graph = Graph([mlp("a"), mlp("t", frozen=True, weights=str(weights))],
                  [Edge("label", "a", "ce"), Edge("t", "a", "kl")], "a")
    with pytest.raises(ValueError, match="do not fit node 't'"):
        Trainer(graph, data, make_config(tmp_path))


def test_template_model_names_are_accepted(tmp_path, data):
    graph = Graph([Node("a", "wrn16_1", {"width": 2})], [Edge("label", "a", "ce")], "a")
    tr = Trainer(graph, data, make_config(tmp_path, batch_size=64))
    tr.fit()


# ------------------------------------------------------------------ 8. presets
def preset_params(name: str) -> dict:
    """Every model parameter of the preset set to mlp."""
    params = {}
    for p in inspect.signature(PRESETS[name]).parameters.values():
        if isinstance(p.default, str) and (p.default == "auto" or p.default in list_models()):
            params[p.name] = "mlp"
    return params


@pytest.fixture(scope="module")
def data28():
    return get_dataset("synthetic", n_train=160, n_test=32, num_classes=CLASSES, channels=1,
                       image_size=28, noise=150.0, val_size=32)


@pytest.fixture(scope="module")
def preset_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("preset-cache")


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_trains_one_epoch(tmp_path, data28, preset_cache, name):
    validate(get_preset(name), list_models())
    graph = get_preset(name, **preset_params(name))
    assert {n.model for n in graph.nodes if not n.is_ensemble} == {"mlp"}, "a preset model parameter was missed"
    cfg = make_config(tmp_path, pretrain_cache=str(preset_cache))
    tr = Trainer(graph, data28, cfg)
    frozen = [i for i, n in enumerate(graph.nodes) if n.frozen]
    before = states(tr)
    row = tr.fit()
    models = [n for n in graph.nodes if not n.is_ensemble]
    # the mean-of-all-models column only where there is more than one model
    assert ("val_acc:ensemble" in row) == (len(models) > 1 or "ensemble" in graph.node_names())
    for n in [*graph.node_names(), *(["ensemble"] if len(models) > 1 else [])]:
        assert 0 <= row[f"val_acc:{n}"] <= 100 and 0 <= row[f"test_acc:{n}"] <= 100
    for i in frozen:
        assert_states_equal([before[i]], [states(tr)[i]])
        assert row[f"val_acc:{graph.nodes[i].name}"] > 40  # pretrained, not random (25 %)
    assert (tr.run_dir / "checkpoint.pt").exists()


# ------------------------------------------------------------- 9. run outputs
def test_run_folder_and_result(tmp_path, data):
    graph = mixed_graph()
    graph.name = "mixed"
    tr = Trainer(graph, data, make_config(tmp_path, epochs=2))
    result = tr.fit()
    run = tr.run_dir
    assert {"config.yaml", "graph.yaml", "metrics.csv", "checkpoint.pt"} <= \
        {p.name for p in run.iterdir()}

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"] == "synthetic"
    assert TrainConfig.from_dict(saved["config"]) == tr.config
    assert load_graph(run / "graph.yaml") == graph

    names = ["a", "b", "c", "ensemble"]
    for split in ("val", "test"):
        for n in names:
            assert f"{split}_acc:{n}" in result
    for n in "abc":
        assert math.isfinite(result[f"train_loss:{n}"])
    assert result["epoch"] == 2 and result["step"] == tr.total_steps

    rows = read_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for k, v in result.items():
        assert float(rows[-1][k]) == pytest.approx(v)

    # the ensemble is the arg-max of the mean logits, checked directly
    loader = TensorLoader(data.test, 1000, shuffle=False, drop_last=False, mean=data.mean,
                          std=data.std)
    (x, y, _), = list(loader)
    with torch.no_grad():
        z = torch.stack([m.eval()(x) for m in tr.models])
    for i, n in enumerate("abc"):
        assert result[f"test_acc:{n}"] == round(100 * (z[i].argmax(-1) == y).double().mean().item(), 4)
    ens = 100 * (z.mean(0).argmax(-1) == y).double().mean().item()
    assert result["test_acc:ensemble"] == round(ens, 4)


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x):
        assert x.shape[0] == self.logits.shape[0]
        return self.logits


def test_ensemble_is_mean_of_logits_by_hand(tmp_path, data):
    """Four kinds of samples (by index mod 4), labels y, classes y+1.. wrong:
    0: every node wrong, but the mean logits are right -> ensemble right
    1: every node right                                 -> ensemble right
    2: a very sure and right, b and c fairly sure wrong -> ensemble right
       (mean probabilities and the majority vote would be wrong)
    3: every node wrong the same way                    -> ensemble wrong
    Nodes: a 50 %, b 25 %, c 25 %; ensemble 75 % (vote / mean prob: 25 %)."""
    graph = Graph([mlp("a"), mlp("b"), mlp("c")], [Edge("label", n, "ce") for n in "abc"], "a")
    tr = Trainer(graph, data, make_config(tmp_path))
    y = data.test.labels
    n = len(y)
    assert n % 4 == 0
    z = torch.zeros(3, n, CLASSES)
    rows = torch.arange(n)
    nxt = lambda d: (y + d) % CLASSES
    g = rows % 4
    for node in range(3):
        zn = z[node]
        m0 = g == 0
        zn[m0, nxt(node + 1)[m0]] = 10.0
        zn[m0, y[m0]] = 8.0
        zn[g == 1, y[g == 1]] = 10.0
        m3 = g == 3
        zn[m3, nxt(1)[m3]] = 10.0
    z[0][g == 2, y[g == 2]] = 100.0
    for node in (1, 2):
        z[node][g == 2, nxt(1)[g == 2]] = 40.0
    tr.step.models = nn.ModuleList(FixedLogits(z[i]) for i in range(3))
    acc = tr.evaluate("test")
    assert acc == {"a": 50.0, "b": 25.0, "c": 25.0, "ensemble": 75.0}
    # and the alternatives really differ on this case
    assert 100 * (z.softmax(-1).mean(0).argmax(-1) == y).double().mean().item() == 25.0


# ---------------------------------------------------- 10. DML vs vanilla (MNIST)
@pytest.mark.slow
def test_dml_vs_vanilla_on_mnist5k(tmp_path, capsys):
    """2-node DML vs vanilla, cnn_small, 3 seeds x 2 epochs, default recipe
    (lr 0.02, crop, multistep, SGD Nesterov), paired by seed (DML node0 starts
    from the same weights as the vanilla student).  Measured while writing this
    test, val accuracy (%): this setup vanilla 93.0/92.2/90.2 (mean 91.8) vs
    DML node0 84.4/89.4/82.8 (mean 85.5); 5 epochs (seeds 0-3) vanilla
    96.4/94.6/94.4/95.0 vs DML 89.2/93.0/88.8/90.6; 12 epochs (seeds 0-1)
    97.0/96.4 vs 95.8/95.2.  DML is reliably *behind* vanilla at this budget,
    so "DML >= vanilla" is not asserted: the numbers are printed, and both
    must learn."""
    mnist = get_dataset("mnist5k")
    acc = {"vanilla": [], "dml": []}
    for seed in range(3):
        for graph, node in (("vanilla", "student"), ("dml", "node0")):
            cfg = make_config(tmp_path, f"{graph}{seed}", epochs=2, lr=None, augment="auto",
                              schedule="multistep", batch_size=64, seed=seed, eval_splits=["val"])
            # rampup none: the DML numbers above were measured before the preset's default ramp-up
            params = {"model": "cnn_small", **({"rampup": "none"} if graph == "dml" else {})}
            row = Trainer(graph, mnist, cfg, graph_params=params).fit()
            acc[graph].append(row[f"val_acc:{node}"])
    capsys.readouterr()
    mean = {k: sum(v) / len(v) for k, v in acc.items()}
    with capsys.disabled():
        print(f"\nMNIST-5k val acc, 2 epochs, seeds 0-2: vanilla {acc['vanilla']} "
              f"(mean {mean['vanilla']:.2f}); DML node0 {acc['dml']} (mean {mean['dml']:.2f})")
    assert min(acc["vanilla"]) > 85 and min(acc["dml"]) > 75


def test_config_yaml_holds_resolved_values_and_the_run_ends_with_a_summary(tmp_path, data, capsys):
    graph = Graph([Node("a", "auto"), Node("b", "mlp", MLP8)],
                  [Edge("label", "a", "ce"), Edge("label", "b", "ce"), Edge("b", "a", "kl")], "a")
    cfg = make_config(tmp_path, epochs=2, lr=None, schedule="multistep", verbose=True)
    Trainer(graph, data, cfg).fit()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["config"]["lr"] is None  # what was asked ...
    res = saved["resolved"]               # ... and what it became
    assert res["lr"] == 0.02 and res["schedule"] == "multistep" and res["milestones"] == [1, 2]
    assert res["models"] == {"a": "cnn_small", "b": "mlp"} and res["total_steps"] == 2 * 6
    out = capsys.readouterr().out
    assert "best epoch" in out and "(by val_acc:a)" in out and f"run folder: {tmp_path / 'run'}" in out


def test_console_names_real_models_times_warm_up_apart_and_skips_a_lone_ensemble(tmp_path, data28, capsys):
    from ktgfast.train.build import model_name

    graph = get_preset("vanilla")  # model auto
    tr = Trainer(graph, data28, make_config(tmp_path, epochs=2))
    real = model_name(graph.nodes[0], data28)
    tr.fit()
    out = capsys.readouterr().out
    assert f"student  {real} (auto)  [learns]" in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch")]
    assert "(first step " in epochs[0] and "warm-up)" in epochs[0]
    assert "warm-up" not in epochs[1]  # one warm-up per process
    rows = tr.history
    assert rows[0]["warmup_s"] > 0 and "warmup_s" not in rows[1]
    assert rows[0]["warmup_s"] < rows[0]["time_s"]
    assert all("val_acc:ensemble" not in r for r in rows) and "val:ensemble" not in out
