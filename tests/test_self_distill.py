"""Self-distillation with Born-Again generations and plain BAN
(``ktgfast.train.self_distill``, docs/self_distillation.md): the bank, the eq. 1 target, the
plateau and generation rules (driven by scripted validation accuracies), the
frozen teacher, eq. 2 by hand, resume mid-generation, and one tiny run of each
method on MNIST-5k.

Tiny synthetic data (8x8 grey images, 4 classes) and one thread, as
tests/test_trainer.py.
"""
from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from ktgfast.train.metrics import TIMING_COLUMNS
from ktgfast.cli import main as cli
from ktgfast.data import get_dataset
from ktgfast.graph import Edge, Graph, Node
from ktgfast.train import TrainConfig
from ktgfast.train import checkpoint as ckpt
from ktgfast.train.steps import self_distill as sd
from ktgfast.train.methods import trainer_class
from ktgfast.train.plateau import PlateauRule
from ktgfast.train.self_distill import BornAgainTrainer, SelfDistillTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 4


def graph(model: str = "cnn_small") -> Graph:
    options = {"image_size": 8, "hidden": 16} if model == "mlp" else {}
    return Graph([Node("student", model, options)], [Edge("label", "student", "ce")], "student")


def config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(epochs=50, batch_size=32, lr=0.05, schedule="constant", augment="crop", pad=2,
                tensorboard=False, device="cpu", progress_bar=False, verbose=False,
                eval_splits=["val"], out=str(tmp_path / name), generations=1,
                plateau_patience=20, generation_patience=40)
    base.update(kw)
    return TrainConfig(**base)


def script_val(trainer, accs: dict[int, float]):
    """Validation accuracy of epoch e is ``accs[e]`` (the test split stays real)."""
    real = trainer.evaluate

    def fake(split):
        if split != "val":
            return real(split)
        acc = accs[trainer.epoch]
        return {"student": acc, "ensemble": acc}

    trainer.evaluate = fake


def clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ the bank
@pytest.mark.slow
def test_bank_stores_training_outputs_at_sample_ids(tmp_path, data):
    """Batch size 40 drops 32 of 192 samples per epoch: those rows keep y_v."""
    tr = SelfDistillTrainer(graph(), data, config(tmp_path, batch_size=40))
    seen = []
    step = tr.train_step

    def record(x, y, idx):
        seen.append((idx.clone(), y.clone(), None))
        forward = tr.forwards[0]
        out = {}

        def spy(inp):
            out["z"] = forward(inp)
            return out["z"]

        tr.forwards[0] = spy
        try:
            loss = step(x, y, idx)
        finally:
            tr.forwards[0] = forward
        seen[-1] = (seen[-1][0], seen[-1][1], out["z"].detach().softmax(-1))
        return loss

    tr.train_step = record
    y_v_before = tr.y_v.clone()
    assert torch.equal(y_v_before, F.one_hot(tr.train_labels, CLASSES).float())
    tr.train_epoch()
    visited = torch.cat([i for i, _, _ in seen])
    assert len(visited) == 160 and len(set(visited.tolist())) == 160
    assert not torch.equal(visited, torch.arange(160))      # really shuffled
    for idx, y, p in seen:
        assert torch.equal(y, tr.train_labels[idx])           # idx are rows of the train split
        assert torch.equal(tr.tmp[idx], p)                    # outputs at those rows, bitwise
    skipped = torch.ones(192, dtype=torch.bool)
    skipped[visited] = False
    assert torch.equal(tr.tmp[skipped], y_v_before[skipped])
    assert tr.history[-1]["event"] == "improved" and torch.equal(tr.y_v, tr.tmp)


def test_target_is_half_label_half_bank(tmp_path, data, monkeypatch):
    tr = SelfDistillTrainer(graph("mlp"), data, config(tmp_path))
    tr.y_v.copy_(torch.rand(192, CLASSES).softmax(-1))
    calls = []
    real = sd.generation_loss

    def spy(z, y, bank_rows, teacher):
        calls.append((y, bank_rows.clone(), teacher))
        return real(z, y, bank_rows, teacher)

    monkeypatch.setattr(sd, "generation_loss", spy)
    x, y, idx = next(iter(tr.train_loader))
    y_v = tr.y_v.clone()
    tr.train_step(x, y, idx)
    (y_seen, rows, teacher), = calls
    assert teacher is None and torch.equal(rows, y_v[idx])
    want = 0.5 * F.one_hot(y, CLASSES).float() + 0.5 * y_v[idx]
    assert torch.equal(sd.bank_target(y, rows), want)
    z = torch.randn(len(y), CLASSES)
    ref = -(want * F.log_softmax(z, -1)).sum(-1).mean()
    assert torch.allclose(real(z, y, rows), ref, atol=1e-6)


def test_y_v_and_best_weights_change_only_when_validation_improves(tmp_path, data):
    tr = SelfDistillTrainer(graph(), data, config(tmp_path))
    script_val(tr, {1: 50.0, 2: 40.0, 3: 62.5, 4: 62.5, 5: 70.0})
    for epoch, improves in zip(range(1, 6), (True, False, True, False, True)):
        y_v, best = tr.y_v.clone(), clone(tr.best_state)
        tr.train_epoch()
        assert tr.history[-1]["event"] == ("improved" if improves else "")
        if improves:
            assert torch.equal(tr.y_v, tr.tmp) and not torch.equal(tr.y_v, y_v)
            assert same_state(tr.best_state, tr.models[0].state_dict())
        else:
            assert torch.equal(tr.y_v, y_v) and same_state(tr.best_state, best)
    assert tr.rule.best == 70.0 and tr.rule.best_epoch == 5


# ------------------------------------------------------------ plateau rules
def test_plateau_rule_sequence():
    rule = PlateauRule(plateau_patience=2, generation_patience=7)
    accs = [10, 20, 15, 15, 15, 15, 15, 25, 25, 25, 25, 25, 25, 25]
    got = [rule.step(a) for a in accs]
    assert [d.improved for d in got[:8]] == [True, True] + [False] * 5 + [True]
    assert [i + 1 for i, d in enumerate(got) if d.action == "reset"] == [4, 6, 10, 12, 14]
    assert all(d.action in ("continue", "reset") for d in got)
    # ends at 7 epochs without a gain after epoch 8: epoch 15
    assert rule.step(25) == (False, "end", "patience") and rule.since == 7
    # paper's 20/40: reset at 20, end at 40 (not another reset at 40)
    rule = PlateauRule(20, 40)
    out = [rule.step(a) for a in [50] + [49] * 40]
    assert [i for i, d in enumerate(out) if d.action != "continue"] == [20, 40]
    assert out[40].action == "end"
    # the per-generation cap, even on an improving epoch
    rule = PlateauRule(5, 10, max_epochs=3)
    assert [rule.step(a) for a in (1, 2, 3)][-1] == (True, "end", "cap")


def test_plateau_resets_weights_decays_lr_to_floor_and_ends(tmp_path, data):
    cfg = config(tmp_path, plateau_patience=2, generation_patience=7, lr=0.05, lr_floor=0.002,
                 gamma=0.1)
    tr = SelfDistillTrainer(graph(), data, cfg)
    script_val(tr, {1: 10.0, 2: 20.0, **{e: 15.0 for e in range(3, 10)}})
    best_after = {}
    while not tr._finished():
        tr.train_epoch()
        row = tr.history[-1]
        if "reset" in row["event"]:
            assert same_state(tr.models[0].state_dict(), tr.best_state)
            assert not tr.optimizers[0].state           # momentum cleared
        best_after[tr.epoch] = clone(tr.best_state)
    rows = tr.history
    assert [r["epoch"] for r in rows if "reset" in r["event"]] == [4, 6, 8]
    assert [r["lr"] for r in rows] == pytest.approx([0.05] * 4 + [0.005] * 2 + [0.002] * 3)
    assert tr.optimizers[0].param_groups[0]["lr"] == 0.002    # floor, not 0.0002
    assert rows[-1]["epoch"] == 9 and rows[-1]["event"] == "end" and tr.done
    assert all(same_state(best_after[e], best_after[2]) for e in range(3, 10))
    assert same_state(tr.models[0].state_dict(), best_after[2])  # the run ends on the best weights
    (summary,) = read_csv(tr.run_dir / "generations.csv")
    assert summary["best_epoch"] == "2" and summary["ended_by"] == "patience"


# --------------------------------------------------------------- generations
def test_next_generation_learns_from_frozen_previous_best(tmp_path, data):
    cfg = config(tmp_path, generations=2, plateau_patience=5, generation_patience=2,
                 eval_splits=["val", "test"], epochs=7)
    tr = SelfDistillTrainer(graph(), data, cfg)
    script_val(tr, {1: 30.0, 2: 50.0, 3: 40.0, 4: 45.0, 5: 10.0, 6: 20.0, 7: 15.0})
    for _ in range(3):
        tr.train_epoch()
    first = tr.models[0]
    assert tr.generation == 1 and tr.teacher is None
    tr.train_epoch()  # epoch 4: two epochs without a gain -> generation 2
    assert tr.generation == 2 and tr.history[-1]["event"] == "end"
    gen1_best = torch.load(tr.run_dir / "generation1_best.pt")
    teacher = tr.teacher
    assert teacher is first and tr.models[0] is not first
    assert same_state(teacher.state_dict(), gen1_best)
    assert not same_state(tr.models[0].state_dict(), gen1_best)       # a fresh initialisation
    assert torch.equal(tr.y_v, F.one_hot(tr.train_labels, CLASSES).float())  # bank restarts
    assert tr.optimizers[0].param_groups[0]["params"][0] is next(tr.models[0].parameters())
    for _ in range(3):
        tr.train_epoch()
    assert tr.teacher is teacher and not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert same_state(teacher.state_dict(), gen1_best)                 # never changed (BN stats too)
    rows = read_csv(tr.run_dir / "generations.csv")
    assert [r["generation"] for r in rows] == ["1", "2"]
    assert [r["ended_by"] for r in rows] == ["patience", "total_cap"] and tr._finished()
    assert rows[0]["best_epoch"] == "2" and rows[0]["best_val_acc"] == "50.0"
    assert float(rows[0]["test_acc"]) == pytest.approx(
        _test_acc(tr, gen1_best), abs=1e-4)                             # test of the BEST weights
    assert [r["generation"] for r in tr.history] == [1] * 4 + [2] * 3


def _test_acc(tr, state) -> float:
    current = clone(tr.models[0].state_dict())
    tr.models[0].load_state_dict(state)
    acc = tr.evaluate("test")["student"]
    tr.models[0].load_state_dict(current)
    return acc


@pytest.mark.parametrize("mode", ["self-distill", "ban"])
def test_generation_two_loss_by_hand(tmp_path, data, mode):
    """Eq. 2 (self-distill) and BAN's loss on one batch, from the formulas."""
    tr = trainer_class(mode)(graph(), data, config(tmp_path, generations=2))
    tr.train_epoch()
    tr._next_generation()
    if mode == "self-distill":
        tr.y_v.copy_(torch.rand(192, CLASSES).softmax(-1))
    else:
        assert tr.y_v is None and tr.tmp is None and not tr.uses_bank
    x, y, idx = next(iter(tr.train_loader))
    tr.models[0].train()
    with torch.no_grad():
        z = tr.models[0](x).double()                 # train mode: batch statistics
        t = tr.teacher(x).double()
    log_q = z - z.logsumexp(-1, keepdim=True)
    p_teacher = t.exp() / t.exp().sum(-1, keepdim=True)
    onehot = F.one_hot(y, CLASSES).double()
    if mode == "self-distill":
        target = 0.5 * onehot + 0.5 * tr.y_v[idx].double()
    else:
        target = onehot                              # BAN: no bank term
    want = -(target * log_q).sum(-1).mean() - (p_teacher * log_q).sum(-1).mean()
    got = tr.train_step(x, y, idx)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_ban_generation_one_is_plain_cross_entropy(tmp_path, data):
    tr = BornAgainTrainer(graph("mlp"), data, config(tmp_path))
    x, y, idx = next(iter(tr.train_loader))
    with torch.no_grad():
        want = F.cross_entropy(tr.models[0](x), y)
    assert tr.train_step(x, y, idx).item() == pytest.approx(want.item(), rel=1e-6)


# -------------------------------------------------------------------- resume
RESUME_ACCS = {1: 50.0, 2: 40.0, 3: 45.0, 4: 60.0, 5: 70.0, 6: 65.0, 7: 75.0}


def resume_config(tmp_path, name):
    # plateau 1: a reset after every epoch without a gain; two generations
    return config(tmp_path, name, generations=2, plateau_patience=1, generation_patience=2,
                  epochs=7, eval_splits=["val", "test"])


def interrupt_after(trainer, epoch):
    run_epoch = trainer.train_epoch

    def wrapped():
        row = run_epoch()
        if trainer.epoch == epoch:
            raise KeyboardInterrupt
        return row

    trainer.train_epoch = wrapped


@pytest.mark.parametrize("mode", ["self-distill", "ban"])
def test_resume_mid_generation_is_bitwise(tmp_path, data, mode):
    """Interrupted after epoch 2 (generation 1, just after a reset) and after
    epoch 5 (generation 2, teacher in place), then resumed."""
    cls = trainer_class(mode)
    full = cls(graph(), data, resume_config(tmp_path, "full"))
    script_val(full, RESUME_ACCS)
    full.fit()
    for stop in (2, 5):
        part = cls(graph(), data, resume_config(tmp_path, "part"), resume=stop == 5)
        script_val(part, RESUME_ACCS)
        interrupt_after(part, stop)
        with pytest.raises(KeyboardInterrupt):
            part.fit()
    state = ckpt.load(tmp_path / "part" / "checkpoint.pt")
    assert state["epoch"] == 5 and state["generations"]["generation"] == 2
    resumed = cls(graph(), data, resume_config(tmp_path, "part"), resume=True)
    script_val(resumed, RESUME_ACCS)
    result = resumed.fit()
    assert resumed.epoch == full.epoch == 7 and resumed.generation == full.generation == 2
    assert same_state(resumed.models[0].state_dict(), full.models[0].state_dict())
    assert same_state(resumed.best_state, full.best_state)
    assert same_state(resumed.teacher.state_dict(), full.teacher.state_dict())
    if mode == "self-distill":
        assert torch.equal(resumed.y_v, full.y_v)
    sf, sr = full.optimizers[0].state_dict(), resumed.optimizers[0].state_dict()
    assert sf["param_groups"] == sr["param_groups"]
    assert all(torch.equal(sf["state"][k]["momentum_buffer"], sr["state"][k]["momentum_buffer"])
               for k in sf["state"])
    timing = TIMING_COLUMNS
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    assert [r["event"] for r in full.history] == ["improved", "reset(lr=0.005)", "end",
                                                  "improved", "improved", "reset(lr=0.005)",
                                                  "improved"]
    gens = [{k: v for k, v in r.items() if k != "cum_time_s"} for r in result["generations"]]
    assert gens == [{k: v for k, v in r.items() if k != "cum_time_s"}
                    for r in full.generation_rows()]
    assert [g["ended_by"] for g in gens] == ["patience", "total_cap"]


def test_resume_rejects_another_method(tmp_path, data):
    cfg = config(tmp_path, epochs=1)
    SelfDistillTrainer(graph("mlp"), data, cfg).fit()
    with pytest.raises(ValueError, match="--method ban"):
        BornAgainTrainer(graph("mlp"), data, cfg, resume=True)


# ------------------------------------------------------------ configuration
@pytest.mark.parametrize("key, value, message", [
    ("generations", 0, "generations"), ("plateau_patience", 0, "plateau_patience"),
    ("generation_patience", -1, "generation_patience"),
    ("max_epochs_per_generation", 0, "max_epochs_per_generation"),
    ("lr_floor", -0.1, "lr_floor"), ("generations", True, "generations")])
def test_config_rejects_bad_generation_values(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{key: value}).validate()


def test_method_errors_are_clear(tmp_path, data):
    with pytest.raises(ValueError, match="val split"):
        SelfDistillTrainer(graph("mlp"), data, config(tmp_path, eval_splits=["test"]))
    with pytest.raises(ValueError, match="lr_floor"):
        SelfDistillTrainer(graph("mlp"), data, config(tmp_path, lr=0.01, lr_floor=0.02))
    frozen = Graph([Node("t", "mlp", {"image_size": 8, "hidden": 16}, frozen=True, weights="w.pt"),
                    Node("s", "mlp", {"image_size": 8, "hidden": 16})],
                   [Edge("label", "s", "ce"), Edge("t", "s", "kl")], "t")
    with pytest.raises(ValueError, match="frozen"):
        SelfDistillTrainer(frozen, data, config(tmp_path))


# ------------------------------------------------------------ MNIST-5k runs
@pytest.mark.slow
def test_each_method_runs_on_mnist5k(tmp_path, capsys):
    """Two one-epoch generations of each method (the CLI for one of them)."""
    common = ["--graph", "vanilla", "--graph-arg", "model=cnn_small", "--data", "mnist5k",
              "--generations", "2", "--max-epochs-per-generation", "1", "--epochs", "10",
              "--device", "cpu", "--tensorboard", "false", "--progress-bar", "false",
              "--eval-splits", "val", "--batch-size", "128"]
    assert cli(["train", "--method", "self-distill", "--out", str(tmp_path / "sd"), *common]) == 0
    out = capsys.readouterr().out
    assert "generation 2 ended (cap)" in out
    mnist = get_dataset("mnist5k")
    cfg = config(tmp_path, "ban", generations=2, max_epochs_per_generation=1, batch_size=128,
                 lr=None, augment="auto")
    result = BornAgainTrainer("vanilla", mnist, cfg, graph_params={"model": "cnn_small"}).fit()
    for run in ("sd", "ban"):
        gens = read_csv(tmp_path / run / "generations.csv")
        metrics = read_csv(tmp_path / run / "metrics.csv")
        assert [g["generation"] for g in gens] == ["1", "2"]
        assert [m["generation"] for m in metrics] == ["1", "2"]
        assert all(float(g["test_acc"]) > 50 for g in gens), gens
        assert float(gens[1]["cum_time_s"]) > float(gens[0]["cum_time_s"]) > 0
        assert (tmp_path / run / "generation2_best.pt").exists()
    assert [g["generation"] for g in result["generations"]] == [1, 2]
