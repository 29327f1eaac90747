"""Data parallel for every method (docs/distributed.md), on real gloo ranks
spawned from pytest: 2 ranks equal one process on the same global batch
where the math allows it (models without BatchNorm), and every method --
ktg with mixup, ssl, self-distill, ban, distill -- trains a few steps on 2
ranks with BatchNorm models, the ranks ending with one model."""
from __future__ import annotations

import os

import pytest
import torch

from ktgfast.graph import Edge, Gate, Graph, Node
from ktgfast.train import TrainConfig, Trainer
from ktgfast.train.distill import DistillSettings
from support.data import tiny_data
from support.processes import spawn

pytestmark = pytest.mark.usefixtures("one_thread")

MLP8 = {"image_size": 8, "hidden": 16}


def base_config(out: str, **kw) -> TrainConfig:
    c = dict(epochs=2, lr=0.1, schedule="constant", augment="none", tensorboard=False, device="cpu",
             progress_bar=False, verbose=False, out=out, eval_splits=["val"])
    c.update(kw)
    return TrainConfig(**c)


def close(got: dict, want: dict, what: str, atol: float = 1e-6) -> None:
    """Float tolerance: the ranks' gradients are sums over other batch splits."""
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=atol,
                                   msg=lambda m, k=k: f"{what} {k}: {m}")


def states(tr) -> list[dict]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in tr.models]


def moved(before: list[dict], after: list[dict]) -> bool:
    return any(not torch.equal(a[k], b[k]) for a, b in zip(before, after) for k in a)


# ------------------------------------------------------------- semi-supervised
def ssl_graph() -> Graph:
    """Mean Teacher (an EMA node, weak -> strong views, linear gate) plus a
    second learner taught on the unlabelled batch through a threshold gate."""
    nodes = [Node("n1", "mlp", MLP8), Node("n2", "mlp", MLP8, ema_of="n1"), Node("n3", "mlp", MLP8)]
    edges = [Edge("label", "n1", "ce"), Edge("label", "n3", "ce"),
             Edge("n2", "n1", "kl", Gate("linear"), src_view="weak", dst_view="strong"),
             Edge("n1", "n3", "kl", Gate("threshold", tau=0.3), src_view="weak", dst_view="weak2")]
    return Graph(nodes, edges, "n1", semi_supervised=True)


def ssl_config(out: str, world: int) -> TrainConfig:
    # per-rank batch sizes: the global batches are 8 labelled + 16 unlabelled
    return base_config(out, labels_per_class=4, batch_size=8 // world,
                       unlabeled_batch_size=16 // world, iterations=6, eval_every=3, augment="crop_flip",
                       pad=2, ema_decay=0.9)


def _ssl_fit(rank, world, out_dir):
    tr = Trainer(ssl_graph(), tiny_data(), ssl_config(os.path.join(out_dir, "ssl2"), world))
    tr.fit()
    torch.save({"states": states(tr), "history": tr.history}, os.path.join(out_dir, f"ssl{rank}.pt"))


@pytest.mark.slow
def test_ssl_two_ranks_equal_one_process(tmp_path):
    """Labelled and unlabelled streams sharded by position (rank r takes the r-th
    half of global batch k, views included), an EMA node, a linear gate and a
    threshold mask: two ranks' fit equals one process's on the global batches."""
    spawn(_ssl_fit, 2, str(tmp_path))
    one = Trainer(ssl_graph(), tiny_data(), ssl_config(str(tmp_path / "ssl1"), 1))
    before = states(one)
    one.fit()
    want = states(one)
    assert moved(before, want)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"ssl{rank}.pt")
        for g, w, name in zip(got["states"], want, one.names):
            close(g, w, f"rank {rank} node {name}")
    two = torch.load(tmp_path / "ssl0.pt")["history"]
    for a, b in zip(two, one.history):
        assert a["val_acc:n1"] == b["val_acc:n1"] and a["mask:n1->n3"] == b["mask:n1->n3"]
        assert a["train_loss:n3"] == pytest.approx(b["train_loss:n3"], rel=1e-5)
    assert any(r["mask:n1->n3"] > 0 for r in one.history)  # the threshold let samples through


# ----------------------------------------------------------- self-distillation
SD_B, SD_STEPS = 32, 3


def sd_graph() -> Graph:
    return Graph([Node("student", "mlp", MLP8)], [Edge("label", "student", "ce")], "student")


def sd_batches():
    """Three global batches of distinct samples (with their row ids)."""
    data = tiny_data()
    perm = torch.randperm(len(data.train.labels), generator=torch.Generator().manual_seed(3))
    out = []
    for k in range(SD_STEPS):
        idx = perm[k * SD_B:(k + 1) * SD_B]
        out.append(((data.train.images[idx].float() - 128) / 64, data.train.labels[idx], idx))
    return out


def _sd_run(rank, world, out_dir, method):
    """Two epochs on the same samples, the ranks' halves swapped in the second:
    a rank then reads bank rows the other rank wrote."""
    cfg = base_config(os.path.join(out_dir, f"{method}-w{world}-r{rank}"), batch_size=SD_B // world,
                      generations=1)
    tr = Trainer(sd_graph(), tiny_data(), cfg, method=method)
    step = tr.step
    for epoch in (1, 2):
        step.begin_period(epoch)
        for x, y, idx in sd_batches():
            if epoch == 2:
                x, y, idx = x.flip(0), y.flip(0), idx.flip(0)
            tr.train_step(x.chunk(world)[rank], y.chunk(world)[rank], idx.chunk(world)[rank])
        step.end_training_period()
        tr.epoch = epoch
        # a validation gain every epoch: y_v <- tmp (the plateau rule's "improved")
        step.end_period({"val_acc:student": 10.0 * epoch, "time_s": 0.0})
    bank = step.y_v.clone() if step.uses_bank else None
    torch.save({"states": states(tr), "bank": bank}, os.path.join(out_dir, f"{method}-w{world}-r{rank}.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["self-distill", "ban"])
def test_self_distillation_two_ranks_equal_one_process(tmp_path, method):
    """The bank keyed by sample id is gathered over ranks after each epoch:
    the second epoch reads on rank 0 the rows rank 1 wrote, and the weights
    and the bank equal one process's."""
    spawn(_sd_run, 2, str(tmp_path), method)
    _sd_run(0, 1, str(tmp_path), method)
    want = torch.load(tmp_path / f"{method}-w1-r0.pt")
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{method}-w2-r{rank}.pt")
        close(got["states"][0], want["states"][0], f"rank {rank}")
        if method == "self-distill":
            torch.testing.assert_close(got["bank"], want["bank"], rtol=1e-5, atol=1e-6)
    if method == "self-distill":  # the bank holds training outputs, not only one-hot rows
        written = torch.cat([idx for _, _, idx in sd_batches()])
        assert not torch.equal(want["bank"][written], want["bank"][written].round())


# ----------------------------------------------------------------- distillation
DI_B, DI_STEPS = 32, 3


def distill_data():
    return tiny_data(image_size=28)  # the default mlp student reads 28x28 images


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two MLP teachers, barely trained (lr 1e-4): their soft targets disagree
    with the labels, so PCGrad finds conflicts to project."""
    out = tmp_path_factory.mktemp("teachers") / "run"
    nodes = [Node(n, "mlp", {"image_size": 28, "hidden": 32}) for n in ("t1", "t2")]
    g = Graph(nodes, [Edge("label", "t1", "ce"), Edge("label", "t2", "ce"), Edge("t1", "t2", "kl")],
              "t1", name="teachers")
    Trainer(g, distill_data(), base_config(str(out), epochs=1, batch_size=32, lr=1e-4)).fit()
    return str(out)


def di_batches():
    data = distill_data()
    gen = torch.Generator().manual_seed(5)
    out = []
    for _ in range(DI_STEPS):
        idx = torch.randperm(len(data.train.labels), generator=gen)[:DI_B]
        out.append(((data.train.images[idx].float() - 128) / 64, data.train.labels[idx]))
    return out


def _distill_steps(rank, world, out_dir, teachers_dir, aggregate):
    settings = DistillSettings(teachers=teachers_dir, student="mlp", aggregate=aggregate,
                               order="random", T=4.0)
    cfg = base_config(os.path.join(out_dir, f"d-{aggregate}-w{world}-r{rank}"), batch_size=DI_B // world,
                      lr=0.02)
    tr = Trainer(data=distill_data(), config=cfg, method="distill", settings=settings)
    for x, y in di_batches():
        tr.train_step(x.chunk(world)[rank], y.chunk(world)[rank])
    torch.save({"states": states(tr), "conflicts": tr.step.conflicts.clone()},
               os.path.join(out_dir, f"d-{aggregate}-w{world}-r{rank}.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("aggregate", ["sum", "pcgrad"])
def test_distill_two_ranks_equal_one_process(tmp_path, teachers, aggregate):
    """sum: DDP on the student.  pcgrad: the per-task gradients are all-reduced
    first and projected after (docs/distributed.md), so the update and the
    conflict counts are one process's on the global batch."""
    spawn(_distill_steps, 2, str(tmp_path), teachers, aggregate)
    _distill_steps(0, 1, str(tmp_path), teachers, aggregate)
    want = torch.load(tmp_path / f"d-{aggregate}-w1-r0.pt")
    for rank in (0, 1):
        got = torch.load(tmp_path / f"d-{aggregate}-w2-r{rank}.pt")
        # 784 inputs per hidden unit: float rounding reaches ~1e-6 of weights ~1
        close(got["states"][0], want["states"][0], f"rank {rank}", atol=1e-5)
        assert torch.equal(got["conflicts"], want["conflicts"])
    if aggregate == "pcgrad":  # the projection did something: tasks conflicted
        assert want["conflicts"].sum() > 0


def test_pcgrad_of_the_mean_is_not_the_mean_of_pcgrads():
    """Why the order matters: PCGrad is not linear, so projecting each rank's
    task gradients and averaging (PCGrad before the all-reduce) is another
    update than projecting the averaged ones (after, ktgfast's choice).  Rank
    0's two tasks conflict, rank 1's do not; their means conflict less."""
    from ktgfast.ops import pcgrad

    rank0 = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # g1·g2 < 0: projected to [.5, .5], [0, 1]
    rank1 = torch.tensor([[1.0, 0.0], [5.0, 1.0]])
    after = pcgrad((rank0 + rank1) / 2, "fixed").update      # [1, 0], [2, 1]: no conflict
    before = (pcgrad(rank0, "fixed").update + pcgrad(rank1, "fixed").update) / 2
    torch.testing.assert_close(after, torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(before, torch.tensor([3.25, 1.25]))


# ---------------------------------------------------- every method, BatchNorm
def smoke_runs(teachers_dir):
    """(name, Trainer arguments) of one tiny BatchNorm run per method."""
    cnn = {"pool": 2}
    ktg = Graph([Node("a", "cnn_small", cnn), Node("b", "cnn_small", cnn)],
                [Edge("label", "a", "ce"), Edge("label", "b", "ce"), Edge("a", "b", "kl"),
                 Edge("b", "a", "kl", Gate("correct"))], "a", name="pair")
    ssl = Graph([Node("n1", "cnn_small", cnn), Node("n2", "cnn_small", cnn, ema_of="n1")],
                [Edge("label", "n1", "ce"), Edge("n2", "n1", "kl", src_view="weak", dst_view="strong")],
                "n1", semi_supervised=True)
    student = Graph([Node("s", "cnn_small", cnn)], [Edge("label", "s", "ce")], "s")
    common = dict(epochs=2, batch_size=16, augment="crop_flip", pad=2)
    return [
        ("ktg", dict(graph=ktg, data=tiny_data(),
                     config=dict(common, mixup="beta", mixup_alpha=1.0))),
        ("ssl", dict(graph=ssl, data=tiny_data(),
                     config=dict(common, labels_per_class=8, unlabeled_batch_size=16, iterations=4,
                                 eval_every=2, batch_size=8))),
        ("self-distill", dict(graph=student, data=tiny_data(), method="self-distill",
                              config=dict(common, epochs=3, generations=2, plateau_patience=1,
                                          generation_patience=1, max_epochs_per_generation=1))),
        ("ban", dict(graph=student, data=tiny_data(), method="ban",
                     config=dict(common, epochs=2, generations=2, max_epochs_per_generation=1))),
        ("distill", dict(data=tiny_data(image_size=28), method="distill",
                         settings=DistillSettings(teachers=teachers_dir, student="cnn_small",
                                                  aggregate="pcgrad"),
                         config=dict(common, epochs=1))),
    ]


def _smoke(rank, world, out_dir, teachers_dir):
    out = {}
    for name, kw in smoke_runs(teachers_dir):
        kw = dict(kw)
        cfg = base_config(os.path.join(out_dir, name), **kw.pop("config"))
        tr = Trainer(config=cfg, **kw)
        tr.fit()
        out[name] = {"states": states(tr), "rows": len(tr.history)}
    torch.save(out, os.path.join(out_dir, f"smoke{rank}.pt"))


@pytest.mark.slow
def test_every_method_trains_on_two_ranks(tmp_path, teachers):
    """BatchNorm models: the ranks end with one model (parameters by DDP or the
    all-reduced PCGrad update, BatchNorm statistics rank 0's after every
    period), and rank 0 alone wrote each run folder."""
    spawn(_smoke, 2, str(tmp_path), teachers)
    r0, r1 = torch.load(tmp_path / "smoke0.pt"), torch.load(tmp_path / "smoke1.pt")
    for name, _ in smoke_runs(teachers):
        assert r0[name]["rows"] > 0
        for a, b in zip(r0[name]["states"], r1[name]["states"]):
            for k in a:
                assert torch.equal(a[k], b[k]), f"{name}: ranks differ in {k}"
        rows = (tmp_path / name / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + r0[name]["rows"], name
    assert (tmp_path / "self-distill" / "generations.csv").read_text().count("\n") == 3  # 2 generations
