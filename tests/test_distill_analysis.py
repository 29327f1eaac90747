"""Ensemble -> one student (ktgfast.train.distill), run loading, and the
analysis metrics / ``ktgfast analyze`` (thesis §4.2, §4.3.3, tables 4.6, 4.10-4.11)."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from ktgfast import reference
from ktgfast.analysis import attention_abs_error, delta_accuracy, mutual_kl, normalise_map
from ktgfast.analysis.report import analyze_run
from ktgfast.cli import main as cli
from ktgfast.graph import get_preset
from ktgfast.models import build_model
from ktgfast.ops import pcgrad_order
from ktgfast.train import TrainConfig, Trainer
from ktgfast.train.distill import DistillSettings, Distiller, read_conflicts_csv, soft_kl
from ktgfast.train.run_dir import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 4


def config(out, **kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4,
                schedule="constant", augment="none", tensorboard=False, device="cpu",
                progress_bar=False, out=str(out), eval_splits=["val"], verbose=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, data):
    """A trained 3-model ensemble with pull and push attention edges."""
    out = tmp_path_factory.mktemp("teachers") / "run"
    Trainer(get_preset("ens-push-pull-3node", model="cnn_small"), data, config(out, epochs=2)).fit()
    return out


# ----------------------------------------------------------------- metrics
def test_mutual_kl_matches_its_definition():
    z1, z2 = torch.randn(50, 7), torch.randn(50, 7) * 3
    p1, p2 = z1.double().softmax(-1), z2.double().softmax(-1)
    manual = 0.5 * ((p1 * (p1 / p2).log()).sum(-1) + (p2 * (p2 / p1).log()).sum(-1)).mean()
    assert mutual_kl(z1, z2).item() == pytest.approx(manual.item(), rel=1e-9)
    assert mutual_kl(z1, z2).item() == pytest.approx(mutual_kl(z2, z1).item(), rel=1e-12)
    assert mutual_kl(z1, z1).item() == pytest.approx(0.0, abs=1e-12)
    # confident models: log-space stays finite where probabilities underflow
    assert torch.isfinite(mutual_kl(torch.tensor([[1e4, 0.0]]), torch.tensor([[0.0, 1e4]])))


def test_delta_accuracy_hand_example():
    y = torch.tensor([0, 1, 0, 1])
    z1 = torch.tensor([[2.0, 0], [0, 1], [0, 3], [0, 3]])   # right, right, wrong, right: 75 %
    z2 = torch.tensor([[0, 1.0], [0, 3], [5, 0], [3, 0]])   # wrong, right, right, wrong: 50 %
    # mean logits: [1,.5] right, [0,2] right, [2.5,1.5] right, [1.5,1.5] tie -> class 0, wrong
    assert delta_accuracy(z1, z2, y) == pytest.approx(75.0 - 62.5)


def test_attention_error_normalises_each_map():
    q1 = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    q2 = 10 * q1 + 3  # same map at another scale: no difference after normalisation
    assert attention_abs_error(q1, q2).item() == pytest.approx(0.0, abs=1e-12)
    q3 = torch.tensor([[[4.0, 2.0], [1.0, 0.0]]])
    manual = (torch.tensor([0, .25, .5, 1]) - torch.tensor([1, .5, .25, 0])).abs().mean()
    assert attention_abs_error(q1, q3).item() == pytest.approx(manual.item())
    assert normalise_map(torch.zeros(1, 2, 2)).abs().sum() == 0  # constant map: no NaN
    with pytest.raises(ValueError, match="differ in shape"):
        attention_abs_error(q1, torch.zeros(1, 3, 3))


# ------------------------------------------------------------ run loading
def test_load_run_restores_the_trained_models(teacher_run, data):
    run = load_run(teacher_run, data=data)
    assert list(run.models) == ["node1", "node2", "node3"]  # the ensemble node has no model
    state = torch.load(teacher_run / "checkpoint.pt", weights_only=False)
    for i, m in enumerate(run.models.values()):
        for k, v in m.state_dict().items():
            assert torch.equal(v, state["models"][i][k])
        assert not m.training and not any(p.requires_grad for p in m.parameters())


def test_load_run_errors_name_the_problem(tmp_path, teacher_run, data):
    with pytest.raises(ValueError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "graph.yaml").write_text("nodes: [a]\n")
    with pytest.raises(ValueError, match="config.yaml, checkpoint.pt missing"):
        load_run(tmp_path / "half")
    with pytest.raises(ValueError, match="no model node 'ensemble'"):
        load_run(teacher_run, data=data, nodes=["ensemble"])


# --------------------------------------------------------------- distiller
def settings(teacher_run, **kw) -> DistillSettings:
    return DistillSettings(teachers=str(teacher_run), **kw)


def test_task_losses_are_one_per_teacher(tmp_path, teacher_run, data):
    d = Distiller(settings(teacher_run, knowledge=["prob", "att"], T=3.0), data, config(tmp_path / "d"))
    assert d.task_names == ["label", "prob:node1", "prob:node2", "prob:node3",
                            "att:node1", "att:node2", "att:node3"]
    x, y, _ = next(iter(d.train_loader))
    losses = d.task_losses(x, y)
    s = d.student.forward_outputs(x)
    with torch.no_grad():
        t = [m.forward_outputs(x) for m in d.teachers]
    assert losses[0].item() == pytest.approx(F.cross_entropy(s.logits, y).item(), rel=1e-5)
    for k in range(3):
        kl = 9.0 * F.kl_div(F.log_softmax(s.logits / 3, -1), F.softmax(t[k].logits / 3, -1),
                            reduction="batchmean")
        assert losses[1 + k].item() == pytest.approx(kl.item(), rel=1e-5)
        u = F.normalize(s.attention.flatten(1), dim=1)
        v = F.normalize(t[k].attention.flatten(1), dim=1)
        assert losses[4 + k].item() == pytest.approx(((u - v) ** 2).sum(1).mean().item(), rel=1e-5)
    ens = Distiller(settings(teacher_run, target="ensemble"), data, config(tmp_path / "e"))
    assert ens.task_names == ["label", "prob:ensemble"]
    mean = torch.stack([m(x) for m in ens.teachers]).mean(0)
    got = ens.task_losses(x, y)[1]
    assert got.item() == pytest.approx(soft_kl(ens.student(x), mean, 2.0).item(), rel=1e-5)


def test_pcgrad_step_equals_manual_projection(tmp_path, teacher_run, data):
    """One step: K separate backwards, the literal PCGrad, plain SGD."""
    cfg = config(tmp_path / "p", momentum=0.0, weight_decay=0.0, lr=0.1)
    d = Distiller(settings(teacher_run, knowledge=["prob", "att"], aggregate="pcgrad", order="fixed"),
                  data, cfg)
    student = build_model("cnn_small", CLASSES, in_channels=1)
    student.load_state_dict(d.student.state_dict())
    x, y, _ = next(iter(d.train_loader))
    ref_d = Distiller(settings(teacher_run, knowledge=["prob", "att"]), data, config(tmp_path / "q"))
    ref_d.student.load_state_dict(student.state_dict())
    losses = ref_d.task_losses(x, y)
    params = list(ref_d.student.parameters())
    grads = [torch.autograd.grad(l, params, retain_graph=True) for l in losses]
    flat = torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in grads])
    expected = reference.pcgrad(flat, pcgrad_order(len(losses), "fixed"))
    before = torch.cat([p.detach().reshape(-1) for p in d.student.parameters()])
    d.train_step(x, y)
    after = torch.cat([p.detach().reshape(-1) for p in d.student.parameters()])
    assert torch.allclose(after, before - 0.1 * expected.update, atol=1e-6, rtol=1e-4)
    assert torch.equal(d.conflicts.cpu(), expected.conflicts)


def test_conflicts_are_written_and_survive_resume(tmp_path, teacher_run, data):
    s = settings(teacher_run, knowledge=["prob", "att"], aggregate="pcgrad")
    d = Distiller(s, data, config(tmp_path / "r", epochs=2))
    d.fit()
    tasks, counts = read_conflicts_csv(tmp_path / "r" / "conflicts.csv")
    assert tasks == d.task_names
    assert torch.equal(counts, counts.T) and counts.diagonal().eq(0).all()
    assert counts.max() <= 2 * d.steps_per_epoch
    # interrupted after epoch 1, resumed: same weights and same counts
    part = Distiller(s, data, config(tmp_path / "r2", epochs=2))
    part.train_epoch()
    again = Distiller(s, data, config(tmp_path / "r2", epochs=2), resume=True)
    again.fit()
    for a, b in zip(d.student.state_dict().values(), again.student.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(read_conflicts_csv(tmp_path / "r2" / "conflicts.csv")[1], counts)
    with pytest.raises(ValueError, match="differ from this run"):
        Distiller(settings(teacher_run, aggregate="pcgrad"), data, config(tmp_path / "r2", epochs=3),
                  resume=True)


def test_kd_weight_scales_every_teacher_term_and_only_those(tmp_path, teacher_run, data):
    """kd_weight multiplies each prob/att term (not the label CE); 1/K of the K
    per-teacher KL gradients equals the gradient of one KL to the teachers'
    mean probabilities (docs/methods.md), checked on the student's logits."""
    x, y = data.train.images[:16].float() / 255, data.train.labels[:16]
    losses = {}
    for w in (1.0, 1 / 3):
        d = Distiller(settings(teacher_run, knowledge=["prob", "att"], kd_weight=w), data,
                      config(tmp_path / f"w{w:.2f}"))
        losses[w] = d.task_losses(x, y).detach()
    assert losses[1.0][0] == losses[1 / 3][0]
    assert torch.allclose(losses[1 / 3][1:], losses[1.0][1:] / 3, rtol=1e-6, atol=0)
    T, zs = 2.0, torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    zt = [torch.randn(8, 5, dtype=torch.float64) * 3 for _ in range(3)]
    per = torch.autograd.grad(sum(soft_kl(zs, z, T) for z in zt) / 3, zs)[0]
    mean_p = torch.stack([F.softmax(z / T, -1) for z in zt]).mean(0)
    one = torch.autograd.grad(T * T * F.kl_div(F.log_softmax(zs / T, -1), mean_p, reduction="batchmean"), zs)[0]
    assert torch.allclose(per.double(), one, rtol=1e-5, atol=1e-7)  # soft_kl computes in float32


def test_resume_refuses_changed_distill_settings(tmp_path, teacher_run, data):
    Distiller(settings(teacher_run), data, config(tmp_path / "r", epochs=2)).train_epoch()
    with pytest.raises(ValueError, match=r"distill.kd_weight = 0.5 differs from the checkpoint's 1.0"):
        Distiller(settings(teacher_run, kd_weight=0.5), data, config(tmp_path / "r", epochs=2), resume=True)
    with pytest.raises(ValueError, match=r"distill.T = 4.0 differs from the checkpoint's 2.0"):
        Distiller(settings(teacher_run, T=4.0), data, config(tmp_path / "r", epochs=2), resume=True)
    # a setting that only changes the speed may change
    Distiller(settings(teacher_run, batched_grads=False), data, config(tmp_path / "r", epochs=2),
              resume=True).fit()


@pytest.mark.parametrize("kw,match", [
    ({"kd_weight": -1.0}, "distill.kd_weight = -1.0; allowed: a number >= 0"),
    ({"att_weight": "x"}, "distill.att_weight"),
    ({"target": "mean"}, "distill.target"), ({"knowledge": ["logits"]}, "distill.knowledge"),
    ({"aggregate": "avg"}, "distill.aggregate"), ({"T": 0}, "temperature"),
])
def test_bad_distill_settings(tmp_path, teacher_run, data, kw, match):
    with pytest.raises(ValueError, match=match):
        Distiller(settings(teacher_run, **kw), data, config(tmp_path / "x"))


def test_pcgrad_refuses_fp16_loss_scaling(tmp_path, teacher_run, data):
    with pytest.raises(ValueError, match="fp16"):
        Distiller(settings(teacher_run, aggregate="pcgrad"), data, config(tmp_path / "x", amp="fp16"))


# ---------------------------------------------------------------- analysis
def test_analyze_ensemble_run(tmp_path, teacher_run, data, monkeypatch):
    import ktgfast.train.run_dir as rd

    real = rd.load_run
    monkeypatch.setattr(rd, "load_run", lambda p, device="cpu", **kw: real(p, device, data=data))
    s = analyze_run(teacher_run, split="val", out=tmp_path / "an")
    run = real(teacher_run, data=data)
    x = (data.val.images.float() / 255 - data.mean[0]) / data.std[0]
    with torch.no_grad():
        outs = [m.forward_outputs(x) for m in run.models.values()]
    with open(tmp_path / "an" / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["node_a"], r["node_b"]) for r in rows] == [("node1", "node2"), ("node1", "node3"),
                                                          ("node2", "node3")]
    r = rows[2]
    assert float(r["mutual_kl"]) == pytest.approx(mutual_kl(outs[1].logits, outs[2].logits).item(), abs=1e-5)
    assert float(r["delta_accuracy"]) == pytest.approx(
        delta_accuracy(outs[1].logits, outs[2].logits, data.val.labels), abs=1e-3)
    assert float(r["attention_abs_error"]) == pytest.approx(
        attention_abs_error(outs[1].attention, outs[2].attention).item(), abs=1e-5)
    for f in ("nodes.csv", "summary.json", "pairs.png", "attention_maps.png"):
        assert (tmp_path / "an" / f).stat().st_size > 0
    summary = json.loads((tmp_path / "an" / "summary.json").read_text())
    assert [n["node"] for n in summary["nodes"]] == ["node1", "node2", "node3", "ensemble"]
    assert "mutual_kl" in s["text"]


@pytest.mark.slow
def test_cli_distill_then_analyze_conflicts(tmp_path, capsys):
    """End to end on MNIST-5k: train a 2-model ensemble, distil it with PCGrad,
    analyse both runs."""
    teachers = tmp_path / "teachers"
    flags = ["--epochs", "1", "--batch-size", "128", "--tensorboard", "false", "--progress-bar",
             "false", "--threads", "1", "--eval-splits", "val"]
    assert cli(["train", "--graph", "ens-dml", "--graph-arg", "model=cnn_small", "--data", "mnist5k",
                "--out", str(teachers), *flags]) == 0
    student = tmp_path / "student"
    assert cli(["distill", "--teachers", str(teachers), "--knowledge", "prob,att", "--aggregate",
                "pcgrad", "--T", "2", "--out", str(student), *flags]) == 0
    capsys.readouterr()
    assert cli(["analyze", str(student), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "table 4.10 layout" in out and "table 4.11 layout" in out
    assert (student / "analysis" / "conflicts.png").exists()
    assert cli(["analyze", str(teachers), "--split", "val", "--no-plots"]) == 0
    assert "node1-node2" in capsys.readouterr().out
    assert cli(["distill", "--teachers", str(tmp_path / "nope"), "--out", str(tmp_path / "z")]) == 2
    assert "does not exist" in capsys.readouterr().err
