"""mixup and superclass-aware mixup (docs/mixup.md): the λ policies' distributions,
the mixing itself, the mixed-target edge losses against a plain reference,
superclass maps (CIFAR-100 coarse labels, mnist5k's default, JSON files),
configuration errors, the trainer hook (one mixed batch for every node,
``mixup: none`` unchanged, bitwise resume) and short DML runs on MNIST-5k.
"""
from __future__ import annotations

import json
import pickle
import numpy as np
import pytest
import torch

import ktgfast.models
import torch.nn.functional as F

from ktgfast import reference
from ktgfast.cli import main as cli
from ktgfast.data import DIGIT_SUPERCLASSES, get_dataset
from ktgfast.data.cifar import CIFAR_SPECS
from ktgfast.data.integrity import md5sum
from ktgfast.data.mixup import (POLICIES, MixedTargets, Mixup, mix, resolve_superclass_map)
from ktgfast.edges import EdgeSpec
from ktgfast.graph import Edge, Gate, Graph, Node
from ktgfast.ops import gated_edge_loss
from ktgfast.train import TrainConfig, Trainer
from ktgfast.train import checkpoint as ckpt
from ktgfast.train.config import MIXUPS, SUPERCLASS_MIXUPS
from ktgfast.train.mixup_loss import MixedTargetEdges

pytestmark = pytest.mark.usefixtures("one_thread", "no_user_cache")

MLP8 = {"image_size": 8, "hidden": 16}
TINY_MAP = {"0": 0, "1": 0, "2": 1, "3": 1}  # 4 synthetic classes in 2 superclasses


@pytest.fixture
def tiny_map(tmp_path):
    path = tmp_path / "superclasses.json"
    path.write_text(json.dumps(TINY_MAP))
    return str(path)


def make_config(tmp_path, name: str = "run", **kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=32, lr=0.05, schedule="constant", augment="none",
                tensorboard=False, device="cpu", progress_bar=False, verbose=False,
                out=str(tmp_path / name), eval_splits=["val"])
    base.update(kw)
    return TrainConfig(**base)


def graph() -> Graph:
    """Two MLPs: label edges (one gated), KL both ways, one of them 'correct'."""
    nodes = [Node("a", "mlp", dict(MLP8)), Node("b", "mlp", dict(MLP8))]
    edges = [Edge("label", "a", "ce"), Edge("label", "b", "ce", gate=Gate("linear")),
             Edge("a", "b", "kl", T=2.0, gate=Gate("correct")), Edge("b", "a", "kl")]
    return Graph(nodes, edges, "a")


def states(trainer):
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in trainer.models]


def states_equal(a, b) -> bool:
    return all(sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
               for sa, sb in zip(a, b))


def lambdas(policy: str, y: torch.Tensor, smap=None, seed: int = 0, **kw):
    mixup = Mixup(policy, superclass_map=smap, seed=seed, **kw)
    mixup.set_epoch(1)
    perm, lam = mixup.draw(y)
    return perm, lam.double()


# ------------------------------------------------------------ 1. λ policies
N = 40_000
Y = torch.arange(N) % 4              # classes 0..3
SMAP = torch.tensor([0, 0, 1, 1])    # superclasses {0, 1}, {2, 3}


def beta_var(a: float) -> float:
    return 1 / (4 * (2 * a + 1))     # variance of Beta(a, a)


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_beta_policy_is_beta_alpha_alpha_per_sample(alpha):
    perm, lam = lambdas("beta", Y, alpha=alpha)
    assert sorted(perm.tolist()) == list(range(N))
    assert lam.min() >= 0 and lam.max() <= 1
    assert abs(lam.mean().item() - 0.5) < 0.01
    assert abs(lam.var().item() - beta_var(alpha)) < 0.006
    assert lam.unique().numel() > N // 2  # one λ per sample, not per batch
    # the superclass of a pair does not matter to plain mixup
    same = SMAP[Y] == SMAP[Y[perm]]
    assert abs(lam[same].var().item() - lam[~same].var().item()) < 0.01


def test_superclass_beta_concentrates_same_superclass_pairs_near_half():
    perm, lam = lambdas("superclass_beta", Y, SMAP)
    same = SMAP[Y] == SMAP[Y[perm]]
    assert 0.4 < same.double().mean() < 0.6
    near, far = lam[same], lam[~same]
    assert abs(near.mean().item() - 0.5) < 0.01 and abs(near.var().item() - beta_var(8)) < 0.002
    assert abs(far.mean().item() - 0.5) < 0.02 and abs(far.var().item() - beta_var(0.2)) < 0.01
    assert ((near - 0.5).abs() < 0.25).double().mean() > 0.95         # mixes near the middle
    assert ((far - 0.5).abs() > 0.4).double().mean() > 0.5            # one image dominates


def test_superclass_select_values_are_exact():
    perm, lam = lambdas("superclass_select", Y, SMAP)
    same = SMAP[Y] == SMAP[Y[perm]]
    assert set(lam[same].tolist()) == {0.5}
    far = lam[~same]
    assert set(far.tolist()) == {0.9, 0.1}
    assert abs((far > 0.5).double().mean().item() - 0.5) < 0.02


def test_same_class_pairs_count_as_same_superclass():
    y = torch.zeros(1000, dtype=torch.long)
    _, lam = lambdas("superclass_select", y, SMAP)
    assert set(lam.tolist()) == {0.5}


def test_draws_are_seeded_by_seed_epoch_and_rank():
    def draw(seed=0, epoch=1, rank=0):
        m = Mixup("superclass_beta", superclass_map=SMAP, seed=seed, rank=rank)
        m.set_epoch(epoch)
        return [m.draw(Y[:64]) for _ in range(3)]

    def same(a, b):
        return all(torch.equal(p, q) and torch.equal(l, k) for (p, l), (q, k) in zip(a, b))

    assert same(draw(), draw())
    assert not same(draw(), draw(seed=1)) and not same(draw(), draw(epoch=2))
    assert not same(draw(), draw(rank=1))
    # batches within an epoch differ, and mixing never touches the global RNGs
    first = draw()
    assert not torch.equal(first[0][0], first[1][0])
    state = torch.get_rng_state(), np.random.get_state()[1].copy()
    draw()
    assert torch.equal(torch.get_rng_state(), state[0]) and (np.random.get_state()[1] == state[1]).all()


def test_mixup_needs_set_epoch():
    with pytest.raises(RuntimeError, match="set_epoch"):
        Mixup("beta")(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))


# ---------------------------------------------------------- 2. the mixing
def test_images_and_targets_share_lambda_and_permutation():
    """Each image is a one-hot feature vector, so a mixed image shows its own
    weight and its partner: both must match the targets."""
    b = 48
    x, y = torch.eye(b, dtype=torch.float64), torch.randint(0, 10, (b,))
    mixup = Mixup("beta", seed=3)  # (Beta(0.2, 0.2) may give a λ that rounds to 1)
    mixup.set_epoch(1)
    xm, t = mixup(x, y)
    assert isinstance(t, MixedTargets) and torch.equal(t.labels, y)
    for i in range(b):
        others = [j for j in range(b) if j != i and xm[i, j] > 0]
        if not others:  # paired with itself
            torch.testing.assert_close(xm[i, i], torch.tensor(1.0, dtype=torch.float64))
            assert t.partner[i] == y[i]
            continue
        (j,) = others
        torch.testing.assert_close(xm[i, i], t.lam[i])
        torch.testing.assert_close(xm[i, j], 1 - t.lam[i])
        assert t.partner[i] == y[j]
    soft = t.soft(10)
    torch.testing.assert_close(soft.sum(1), torch.ones(b, dtype=torch.float64))
    torch.testing.assert_close(soft, t.lam[:, None] * F.one_hot(y, 10) +
                               (1 - t.lam[:, None]) * F.one_hot(t.partner, 10))


def test_mix_formula_and_dominant_label():
    x = torch.randn(4, 1, 3, 3)
    y = torch.tensor([0, 1, 2, 3])
    perm = torch.tensor([1, 0, 3, 2])
    lam = torch.tensor([0.7, 0.3, 0.5, 1.0])
    xm, t = mix(x, y, perm, lam)
    torch.testing.assert_close(xm, lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm])
    assert torch.equal(xm[3], x[3])  # λ = 1 leaves the image as it is
    assert t.dominant.tolist() == [0, 0, 2, 3]  # λ = ½: the sample's own label


# ---------------------------------------------- 3. mixed-target edge losses
NUM_SLOTS, B, C = 3, 16, 5
SPECS = [
    EdgeSpec(src="label", dst=0, loss="ce"),
    EdgeSpec(src="label", dst=0, loss="kl", gate="linear", T=2.0, weight=0.3),
    EdgeSpec(src="label", dst=1, loss="ce", gate="neg_linear", weight=0.7),
    EdgeSpec(src="label", dst=1, loss="kl", gate="sine", f=0.5, phi=1.0, T=3.0, t2=False),
    EdgeSpec(src="label", dst=2, loss="ce", gate="correct"),
    EdgeSpec(src="label", dst=2, loss="ce", gate="threshold", tau=0.5),
    EdgeSpec(src="label", dst=2, loss="ce", gate="cutoff"),
    EdgeSpec(src=0, dst=1, loss="kl", gate="correct", T=2.0),
    EdgeSpec(src=1, dst=0, loss="kl"),
    EdgeSpec(src=2, dst=0, loss="cos", gate="neg_linear", weight=0.1),
    EdgeSpec(src=1, dst=2, loss="pl", gate="threshold", tau=0.3),
    EdgeSpec(src=0, dst=2, loss="kl", gate="sine", f=0.25, phi=2.0, weight=0.5),
]


def reference_mixed_loss(logits, targets, specs, progress, reduction):
    """One edge at a time: label edges are the cross-entropy to the soft
    targets; peer edges the plain reference with the dominant labels."""
    m, b, c = logits.shape
    soft, dominant = targets.soft(c).to(logits.dtype), targets.dominant
    prog = torch.tensor(progress, dtype=logits.dtype)
    div = b if reduction == "mean" else 1
    node = [logits.new_zeros(()) for _ in range(m)]
    for e in specs:
        if e.gate == "cutoff":
            continue
        zt = logits[e.dst]
        if e.from_label:
            g = reference.gate_weights(e, None, dominant, prog)
            a = -(soft * F.log_softmax(zt / e.T, -1)).sum(-1)
        else:
            zs = logits[e.src].detach()
            g = reference.gate_weights(e, zs, dominant, prog)
            a = reference.per_sample_loss(e, zt, zs, dominant)
        node[e.dst] = node[e.dst] + e.coef * torch.where(g > 0, g * a, torch.zeros_like(a)).sum() / div
    return torch.stack(node)


def mixed_targets(seed: int = 0) -> MixedTargets:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (B,), generator=g)
    perm = torch.randperm(B, generator=g)
    lam = torch.rand(B, generator=g, dtype=torch.float64)
    lam[:3] = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    return MixedTargets(y, y[perm], lam)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("progress", [0.0, 0.37, 1.0])
def test_mixed_edge_loss_matches_reference(reduction, progress):
    targets = mixed_targets()
    logits = (3 * torch.randn(NUM_SLOTS, B, C, dtype=torch.float64)).requires_grad_()
    edges = MixedTargetEdges(SPECS, NUM_SLOTS, "cpu")
    got = edges(logits, targets, torch.tensor(progress, dtype=torch.float64), reduction)
    want = reference_mixed_loss(logits, targets, SPECS, progress, reduction)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    w = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)  # distinct weights per node
    (g_got,) = torch.autograd.grad((got * w).sum(), logits)
    (g_want,) = torch.autograd.grad((want * w).sum(), logits)
    torch.testing.assert_close(g_got, g_want, atol=1e-10, rtol=1e-10)


def test_unmixed_targets_give_the_fused_op_loss():
    """λ = 1 (or a partner of the same class) is the plain labelled batch."""
    y = torch.randint(0, C, (B,))
    logits = torch.randn(NUM_SLOTS, B, C, dtype=torch.float64)
    edges = MixedTargetEdges(SPECS, NUM_SLOTS, "cpu")
    want = gated_edge_loss(logits, y, SPECS, 0.4).node_loss
    for t in (MixedTargets(y, y.roll(1), torch.ones(B, dtype=torch.float64)),
              MixedTargets(y, y, torch.rand(B, dtype=torch.float64))):
        torch.testing.assert_close(edges(logits, t, 0.4), want, atol=1e-10, rtol=1e-10)


def test_mixed_edge_loss_in_float32_and_without_peers():
    targets = mixed_targets(1)
    logits = torch.randn(NUM_SLOTS, B, C)
    got = MixedTargetEdges(SPECS, NUM_SLOTS, "cpu")(logits, targets, 0.5)
    assert got.dtype == torch.float32
    want = reference_mixed_loss(logits.double(), targets, SPECS, 0.5, "mean")
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    labels_only = [e for e in SPECS if e.from_label]
    got = MixedTargetEdges(labels_only, NUM_SLOTS, "cpu")(logits, targets, 0.5)
    torch.testing.assert_close(got.double(), reference_mixed_loss(logits.double(), targets, labels_only,
                                                                  0.5, "mean"), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------- 4. superclass maps
def write_cifar100(root, monkeypatch):
    """A tiny CIFAR-100 release (one train image per class, 20 test images)
    whose coarse label of fine class c is (7 c) mod 20, in the release's layout."""
    spec = CIFAR_SPECS["cifar100"]
    base = root / spec.folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 100), ("test", 20)):
        fine = np.arange(n) % 100
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": fine.tolist(), "coarse_labels": (7 * fine % 20).tolist()}
        (base / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"fine_label_names": [f"f{i}" for i in range(100)],
            "coarse_label_names": [f"c{i}" for i in range(20)]}
    (base / spec.meta).write_bytes(pickle.dumps(meta, protocol=2))
    monkeypatch.setattr(spec, "md5", {f: md5sum(base / f) for f in spec.files})


def test_cifar100_mixup_uses_the_coarse_labels(tmp_path, monkeypatch):
    write_cifar100(tmp_path, monkeypatch)
    ds = get_dataset("cifar100", root=str(tmp_path))
    cfg = make_config(tmp_path, mixup="superclass_select", eval_splits=["test"], batch_size=50)
    tr = Trainer(Graph([Node("a", "mlp", {"image_size": 32, "hidden": 8})],
                       [Edge("label", "a", "ce")], "a"), ds, cfg)
    assert torch.equal(tr.mixup.superclass_map, 7 * torch.arange(100) % 20)
    # λ follows the coarse labels: 0.5 exactly for pairs that share one
    y = torch.arange(100).repeat(20)
    tr.mixup.set_epoch(1)
    perm, lam = tr.mixup.draw(y)
    same = (7 * y % 20) == (7 * y[perm] % 20)
    assert same.any() and (~same).any()
    assert set(lam[same].tolist()) == {0.5} and 0.5 not in set(lam[~same].tolist())


@pytest.fixture(scope="module")
def mnist():
    return get_dataset("mnist5k")


def test_mnist5k_uses_digit_superclasses_by_default(mnist):
    ds = mnist
    want = torch.tensor([DIGIT_SUPERCLASSES[d] for d in range(10)])
    assert torch.equal(resolve_superclass_map(ds, None, "superclass_beta"), want)


def test_json_map_is_read_and_overrides_the_dataset_map(tmp_path, data, mnist, tiny_map):
    tr = Trainer(graph(), data, make_config(tmp_path, mixup="superclass_beta", superclass_map=tiny_map))
    assert torch.equal(tr.mixup.superclass_map, torch.tensor([0, 0, 1, 1]))
    path = tmp_path / "digits.json"
    path.write_text(json.dumps({str(d): d % 2 for d in range(10)}))  # odd / even
    assert torch.equal(resolve_superclass_map(mnist, str(path), "superclass_beta"),
                       torch.arange(10) % 2)


# ------------------------------------------------------------- 5. errors
@pytest.fixture
def no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("training started for a bad configuration")

    monkeypatch.setattr(Trainer, "train_step", boom)
    monkeypatch.setattr(ktgfast.models, "build_model", boom)


def test_missing_map_names_dataset_and_option(tmp_path, data, no_training):
    with pytest.raises(ValueError, match="mixup 'superclass_select' needs superclasses, but dataset "
                                         "'synthetic' has none.*--superclass-map"):
        Trainer(graph(), data, make_config(tmp_path, mixup="superclass_select"))
    # plain mixup needs no map: it gets as far as building the models
    with pytest.raises(AssertionError, match="training started"):
        Trainer(graph(), data, make_config(tmp_path, mixup="beta"))


def test_incomplete_or_unreadable_map(tmp_path, data, no_training):
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"0": 0, "1": 0, "2": 1}))
    with pytest.raises(ValueError, match=r"does not cover every class: missing \[3\]"):
        Trainer(graph(), data, make_config(tmp_path, mixup="superclass_beta", superclass_map=str(path)))
    with pytest.raises(ValueError, match="cannot read superclass map"):
        Trainer(graph(), data, make_config(tmp_path, mixup="superclass_beta",
                                           superclass_map=str(tmp_path / "nope.json")))


@pytest.mark.parametrize("values,message", [
    ({"mixup": "cutmix"}, "config.mixup = 'cutmix'; allowed: none, beta, superclass_beta"),
    ({"mixup": "beta", "mixup_alpha": 0}, "config.mixup_alpha = 0"),
    ({"mixup": "beta", "mixup_alpha": float("inf")}, "config.mixup_alpha"),
    ({"mixup": "beta", "superclass_map": "m.json"}, "superclass_map is set but config.mixup = 'beta'"),
    ({"superclass_map": "m.json"}, "config.mixup = 'none' uses no superclasses"),
])
def test_config_rejects_bad_mixup_values(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_config_choices_follow_the_policy_registry():
    assert MIXUPS == ("none", *POLICIES)
    assert SUPERCLASS_MIXUPS == tuple(k for k, p in POLICIES.items() if p.uses_superclasses)
    with pytest.raises(ValueError, match="unknown mixup policy 'x'; allowed: beta, superclass_beta"):
        Mixup("x")
    with pytest.raises(ValueError, match="needs a superclass map"):
        Mixup("superclass_beta")


def test_cli_mixup_errors(tmp_path, capsys, no_training):
    base = ["train", "--graph", "dml", "--data", "synthetic", "--out", str(tmp_path / "run"),
            "--eval-splits", "test"]
    for flags, message in ((["--mixup", "superclass_beta"], "dataset 'synthetic' has none"),
                           (["--mixup", "mixdown"], "--mixup mixdown: allowed: none, beta")):
        assert cli(base + flags) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["ssl", "self-distill", "ban"])
def test_trainers_with_their_own_step_refuse_mixup(tmp_path, data, method, monkeypatch):
    """Mixup belongs to the ktg step; another method refuses it before any work."""
    def boom(*a, **k):
        raise AssertionError("a model was built for a refused config")

    monkeypatch.setattr(ktgfast.models, "build_model", boom)
    with pytest.raises(ValueError, match=rf"config.mixup = 'beta' .*--method {method} does not use it"):
        Trainer(graph(), data, make_config(tmp_path, mixup="beta"), method=method)


# ----------------------------------------------------------- 6. the trainer
def test_every_node_sees_the_same_mixed_batch(tmp_path, data, tiny_map):
    cfg = make_config(tmp_path, mixup="superclass_beta", superclass_map=tiny_map, augment="crop", pad=1)
    tr = Trainer(graph(), data, cfg)
    seen, targets = [], []
    for i, fwd in enumerate(tr.forwards):
        tr.forwards[i] = lambda x, fwd=fwd, i=i: (seen.append((i, x.clone())), fwd(x))[1]
    step = tr.train_step
    tr.train_step = lambda x, y: (targets.append(y), step(x, y))[1]
    tr.fit()
    # what the loader and a fresh mixer of the same seed give for epoch 1
    mixup = Mixup("superclass_beta", superclass_map=torch.tensor([0, 0, 1, 1]), seed=cfg.seed)
    mixup.set_epoch(1)
    tr.train_loader.set_epoch(1)
    expected = [mixup(x, y) for x, y, _ in tr.train_loader]
    assert len(seen) == 2 * len(expected) == 2 * tr.steps_per_epoch
    for k, (x, t) in enumerate(expected):
        (ia, xa), (ib, xb) = seen[2 * k: 2 * k + 2]
        assert (ia, ib) == (0, 1)
        assert torch.equal(xa, xb) and torch.equal(xa, x)
        assert all(torch.equal(a, b) for a, b in zip(targets[k], t))
        assert not torch.equal(t.labels, t.partner)


def test_mixup_none_leaves_the_step_inputs_untouched(tmp_path, data):
    """With mixup none the trainer runs ``train_step`` on the loader's own
    batches: the same weights as stepping through the loader by hand."""
    cfg = make_config(tmp_path, "a", epochs=2, augment="crop", pad=1)
    auto = Trainer(graph(), data, cfg)
    assert auto.mixup is None and auto.mixed_edges is None
    auto.fit()
    hand = Trainer(graph(), data, make_config(tmp_path, "b", epochs=2, augment="crop", pad=1))
    for epoch in (1, 2):
        hand.train_loader.set_epoch(epoch)
        for m in hand.models:
            m.train()
        for x, y, _ in hand.train_loader:
            hand.train_step(x, y)
    assert states_equal(states(auto), states(hand))
    mixed = Trainer(graph(), data, make_config(tmp_path, "c", epochs=2, augment="crop", pad=1,
                                               mixup="beta"))
    mixed.fit()
    assert not states_equal(states(auto), states(mixed))


def test_resume_is_bitwise_with_mixup(tmp_path, data, tiny_map):
    def config(name):
        return make_config(tmp_path, name, epochs=2, augment="crop", pad=1, mixup="superclass_beta",
                           superclass_map=tiny_map, schedule="multistep", milestones=[1])

    full = Trainer(graph(), data, config("full"))
    full.fit()
    part = Trainer(graph(), data, config("part"))
    run_epoch = part.train_epoch

    def stop_after_one():
        run_epoch()
        raise KeyboardInterrupt

    part.train_epoch = stop_after_one
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    assert ckpt.load(tmp_path / "part" / "checkpoint.pt")["epoch"] == 1
    resumed = Trainer(graph(), data, config("part"), resume=True)
    resumed.fit()
    assert resumed.epoch == full.epoch == 2
    assert states_equal(states(full), states(resumed))
    assert full.history[-1]["val_acc:a"] == resumed.history[-1]["val_acc:a"]


# ------------------------------------------------- 7. DML on MNIST-5k
@pytest.mark.slow
@pytest.mark.parametrize("policy", list(POLICIES))
def test_dml_trains_with_each_policy_on_mnist5k(tmp_path, mnist, policy):
    """One epoch (54 steps) of 2 x cnn_small DML at the mnist5k recipe.  Measured
    val accuracy (node0 / node1): no mixup 75.8 / 68.2, beta 72.4 / 72.0,
    superclass_beta 47.2 / 41.2, superclass_select 42.6 / 43.6 (peers that
    start on half-and-half digits learn more slowly at first)."""
    cfg = make_config(tmp_path, policy, lr=None, batch_size=64, mixup=policy, augment="auto")
    tr = Trainer("dml", mnist, cfg, graph_params={"model": "cnn_small"})
    row = tr.fit()
    assert tr.mixup is not None and tr.mixup.name == policy
    for node in ("node0", "node1"):
        assert np.isfinite(row[f"train_loss:{node}"])
        assert row[f"val_acc:{node}"] > 25, row  # chance is 10 %
