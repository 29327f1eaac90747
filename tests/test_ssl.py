"""Semi-supervised KTG (docs/semi_supervised.md): the labelled/unlabelled split and the view
stream, the views each edge really sees (a weak view fed twice makes consistency zero), EMA nodes,
FixMatch's mask, hidden unlabelled labels, presets end to end on MNIST-5k,
errors, bitwise resume, and the semi-supervised search spaces.

Tiny synthetic data (8x8 grey images, 4 classes) and one intra-op thread,
except for the few-iteration MNIST-5k runs of the presets.
"""
from __future__ import annotations

import math

import optuna
import pytest
import torch
import torch.nn.functional as F

from ktgfast.train.metrics import TIMING_COLUMNS
from ktgfast.cli import main as cli
from ktgfast.data import Augment, RandAugment, get_dataset
from ktgfast.data.semi import HIDDEN_LABEL, ViewStream, split_labeled
from ktgfast.edges import EdgeTable
from ktgfast.graph import (Edge, Gate, Graph, GraphError, Node, get_preset, load_graph, render,
                           save_graph, summary, to_dot, validate)
from ktgfast.graph.ssl import VIEWS
from ktgfast.models import model_options
from ktgfast.ops import gated_edge_loss
from ktgfast.search import load_space
from ktgfast.train import TrainConfig, Trainer
from ktgfast.train.steps import ssl as ssl_mod
from ktgfast.train.run_dir import load_run
from ktgfast.train.ssl import SSLSlots

pytestmark = pytest.mark.usefixtures("one_thread", "no_user_cache")

SSL_PRESETS = ["ssl-supervised", "pi-model", "mean-teacher", "pseudo-label", "fixmatch"]
CNN = {"pool": 2}


def config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(labels_per_class=4, batch_size=8, unlabeled_batch_size=16, iterations=6, eval_every=3,
                lr=0.05, schedule="constant", augment="crop_flip", pad=2, randaugment_m=9.0,
                tensorboard=False, device="cpu", progress_bar=False, verbose=False,
                out=str(tmp_path / name), pretrain_cache=str(tmp_path / "cache"))
    base.update(kw)
    return TrainConfig(**base)


def cnn(name: str, **kw) -> Node:
    return Node(name, "cnn_small", dict(CNN), **kw)


def ssl_graph(nodes, edges, target="n1") -> Graph:
    return Graph(nodes, [Edge("label", "n1", "ce"), *edges], target, semi_supervised=True)


def states(tr) -> list[dict]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in tr.models]


def assert_states_equal(a, b):
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------ 1. data
def test_labelled_split_is_stratified_disjoint_seeded_and_hides_labels(data):
    lab, unl = split_labeled(data.train, 5, seed=3)
    assert torch.bincount(lab.labels, minlength=4).tolist() == [5, 5, 5, 5]
    assert len(lab) + len(unl) == len(data.train)
    ids = set(lab.ids.tolist())
    assert not ids & set(unl.ids.tolist()) and ids | set(unl.ids.tolist()) == set(data.train.ids.tolist())
    assert (unl.labels == HIDDEN_LABEL).all() and unl.coarse_labels is None
    again, _ = split_labeled(data.train, 5, seed=3)
    other, _ = split_labeled(data.train, 5, seed=4)
    assert torch.equal(again.ids, lab.ids) and not torch.equal(other.ids, lab.ids)
    # the validation split was carved before: none of its samples is in either part
    assert not set(data.val.ids.tolist()) & (ids | set(unl.ids.tolist()))
    with pytest.raises(ValueError, match="class 0 has only 48 training images; allowed: at most 48"):
        split_labeled(data.train, 49)
    with pytest.raises(ValueError, match="labels_per_class must be an integer >= 1"):
        split_labeled(data.train, 0)


def test_view_stream_views_differ_and_batches_depend_only_on_k(data):
    kw = dict(views=VIEWS, augment=Augment(pad=2), strong=RandAugment(2, 9.0), mean=data.mean,
              std=data.std, seed=5)
    s = ViewStream(data.train, 40, **kw)
    n = len(data.train)
    batches = [s.batch(k) for k in range(12)]
    # epoch e = a permutation of the split; the stream is the epochs end to end
    idx = torch.cat([b[2] for b in batches])
    for e in range(2):
        assert sorted(idx[e * n:(e + 1) * n].tolist()) == list(range(n))
    assert not torch.equal(idx[:n], idx[n:2 * n])
    views, y, _ = batches[4]  # straddles epochs 0 and 1 (positions 160..200 of 192)
    assert set(views) == set(VIEWS) and y.shape == (40,)
    for a, b in [("weak", "weak2"), ("weak", "strong"), ("weak2", "strong")]:
        assert not torch.equal(views[a], views[b]), f"{a} and {b} are the same images"
    fresh = ViewStream(data.train, 40, **kw)  # seek: no earlier batch needed
    for k in (7, 4):
        v2, y2, i2 = fresh.batch(k)
        assert torch.equal(i2, batches[k][2]) and torch.equal(y2, batches[k][1])
        assert all(torch.equal(v2[v], batches[k][0][v]) for v in VIEWS)
    big = ViewStream(data.train, 3 * n + 5, views=("weak",), augment=None, mean=data.mean, std=data.std)
    assert big.batch(0)[0]["weak"].shape[0] == 3 * n + 5  # tiny labelled sets, large batches


# ------------------------------------------------------------ 2. views (a weak view fed twice makes consistency zero)
def record_inputs(tr) -> dict[int, list[torch.Tensor]]:
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(tr.models))}
    for i, fwd in enumerate(tr.forwards):
        def wrapped(x, i=i, fwd=fwd):
            seen[i].append(x.detach().clone())
            return fwd(x)
        tr.forwards[i] = wrapped
    return seen


def capture_unlabelled_calls(monkeypatch) -> list:
    calls = []
    real = ssl_mod.gated_edge_loss

    def spy(logits, labels, table, *a, **k):
        calls.append((logits.detach().clone(), labels.clone(), table))
        return real(logits, labels, table, *a, **k)

    monkeypatch.setattr(ssl_mod, "gated_edge_loss", spy)
    return calls


@pytest.mark.slow
def test_pi_model_consistency_sees_two_different_views(tmp_path, data, monkeypatch):
    graph = get_preset("pi-model", model="cnn_small")
    graph.nodes[0] = cnn("node1")
    tr = Trainer(graph, data, config(tmp_path, iterations=1, eval_every=1))
    assert tr.method == "ssl"
    seen = record_inputs(tr)
    calls = capture_unlabelled_calls(monkeypatch)
    tr.fit()
    (x,) = seen[0]
    assert x.shape[0] == 8 + 16 + 16  # one forward: labelled, weak, weak2
    views, _, _ = tr.unlabeled_stream.batch(0)
    assert torch.equal(x[8:24], views["weak"]) and torch.equal(x[24:], views["weak2"])
    assert not torch.equal(views["weak"], views["weak2"])
    zu = calls[-1][0]
    assert tr.slots.u_slots == [(0, "weak"), (0, "weak2")]
    spec = tr.u_table.specs[0]
    assert (spec.src, spec.dst) == (0, 1)  # source on weak (ζ2), destination on weak2 (ζ1)
    assert not torch.equal(zu[0], zu[1])


def test_mean_teacher_student_and_teacher_see_different_views(tmp_path, data, monkeypatch):
    # the EMA node names no model: it gets its source's (cnn_small with pool 2)
    graph = ssl_graph([cnn("n1"), Node("n2", ema_of="n1")],
                      [Edge("n2", "n1", "kl", src_view="weak", dst_view="strong")])
    tr = Trainer(graph, data, config(tmp_path, iterations=1, eval_every=1))
    seen = record_inputs(tr)
    calls = capture_unlabelled_calls(monkeypatch)
    tr.fit()
    views, _, idx = tr.unlabeled_stream.batch(0)
    (x1,), (x2,) = seen[0], seen[1]
    assert torch.equal(x1[8:], views["strong"]) and torch.equal(x2, views["weak"])
    assert not torch.equal(x1[8:], x2)
    assert tr.slots.u_slots == [(0, "strong"), (1, "weak")]
    assert len(calls) == 2 and calls[1][0].shape[:2] == (2, 16)
    run = load_run(tr.run_dir, data=data)  # read back (as distillation and analysis do)
    assert_states_equal([run.models["n2"].state_dict()], [tr.models[1].state_dict()])


def test_consistency_on_one_view_is_refused():
    same = ssl_graph([cnn("n1")], [Edge("n1", "n1", "kl", src_view="weak", dst_view="weak")])
    with pytest.raises(GraphError, match=r"same view 'weak'.*zero loss"):
        validate(same)
    mt = ssl_graph([cnn("n1"), cnn("n2", ema_of="n1")],
                   [Edge("n2", "n1", "kl", src_view="weak2", dst_view="weak2")])
    with pytest.raises(GraphError, match="its EMA partner"):
        validate(mt)
    # a pseudo-label self-loop on one view is Lee's Pseudo-Label: allowed
    validate(ssl_graph([cnn("n1")], [Edge("n1", "n1", "pl", src_view="weak", dst_view="weak")]))


# ------------------------------------------------------------ 3. EMA nodes
def test_ema_node_gets_no_gradient_and_equals_hand_computed_ema(tmp_path, data):
    decay = 0.8
    graph = ssl_graph([cnn("n1"), cnn("n2", ema_of="n1")],
                      [Edge("n2", "n1", "kl", src_view="weak", dst_view="weak2")])
    tr = Trainer(graph, data, config(tmp_path, iterations=5, eval_every=5, ema_decay=decay))
    src, ema = tr.models
    assert all(not p.requires_grad for p in ema.parameters())
    assert not any(p is q for o in tr.optimizers for g in o.param_groups for p in g["params"]
                   for q in ema.parameters())
    expected = {k: v.clone() for k, v in src.state_dict().items()}  # EMA starts at the source
    assert_states_equal([ema.state_dict()], [expected])
    step = tr.train_step

    def stepped(*a, **k):
        out = step(*a, **k)
        for key, v in src.state_dict().items():
            expected[key] = decay * expected[key] + (1 - decay) * v if v.is_floating_point() else v.clone()
        return out

    tr.train_step = stepped
    tr.fit()
    assert all(p.grad is None for p in ema.parameters())
    got = ema.state_dict()
    for key, v in expected.items():
        assert torch.allclose(got[key], v, rtol=1e-5, atol=1e-6), key
    assert "running_mean" in " ".join(expected)  # buffers are averaged too
    assert not torch.equal(got["fc.weight"], src.state_dict()["fc.weight"])


def test_ema_node_rules():
    bad = [
        (ssl_graph([cnn("n1"), cnn("n2", ema_of="zz")], []), "graph.nodes[1].ema_of: 'zz' is not a node"),
        (ssl_graph([cnn("n1"), cnn("n2", ema_of="n2")], []), "cannot be the EMA of itself"),
        (ssl_graph([cnn("n1"), cnn("n2", ema_of="n1"), cnn("n3", ema_of="n2")], []), "'n2' is an EMA node"),
        (ssl_graph([cnn("n1"), Node("n2", "mlp", ema_of="n1")], []), "an EMA node has its source's model"),
        (ssl_graph([cnn("n1"), cnn("n2", ema_of="n1")], [Edge("label", "n2", "ce")]),
         "'n2' is an EMA node .* never back-propagated"),
        (Graph([cnn("n1"), cnn("n2", ema_of="n1")], [Edge("label", "n1", "ce")], "n1"),
         "graph.nodes[1].ema_of: .* set semi_supervised: true"),
    ]
    for graph, message in bad:
        with pytest.raises(GraphError, match=message.replace("[", r"\[").replace("]", r"\]")):
            validate(graph, model_options)
    # an EMA node may be the target (it learns through its source) and a cutoff edge into it is fine
    ok = ssl_graph([cnn("n1"), cnn("n2", ema_of="n1")], [Edge("label", "n2", "ce", Gate("cutoff"))], "n2")
    assert validate(ok).learns("n2")


# ------------------------------------------------------------ 4. FixMatch's mask
def fixmatch_table(**kw):
    slots = SSLSlots(get_preset("fixmatch", **kw))
    assert slots.u_slots == [(0, "weak"), (0, "strong")]
    return EdgeTable(slots.u_specs, 2)


def test_fixmatch_mask_divides_by_the_whole_unlabelled_batch():
    # 4 unlabelled samples; the weak view is confident (> 0.95) on samples 0 and 2 only
    weak = torch.tensor([[8.0, 0, 0], [1, 0.5, 0], [0, 0, 9.0], [0.2, 0.1, 0]], dtype=torch.float64)
    strong = torch.tensor([[0.5, 1, 0], [2, 0, 0], [1, 1, 1], [0, 3, 0]], dtype=torch.float64)
    out = gated_edge_loss(torch.stack([weak, strong]), torch.full((4,), HIDDEN_LABEL), fixmatch_table())
    ce = -F.log_softmax(strong, -1)
    hand = (ce[0, 0] + ce[2, 2]) / 4  # masked sum / B (not / 2 passing samples)
    assert torch.allclose(out.edge_loss[0], hand) and out.count.tolist() == [2]
    assert torch.allclose(out.node_loss, torch.stack([torch.zeros((), dtype=torch.float64), hand]))


def test_thresholded_pseudo_label_reads_the_weak_views_confidence():
    table = fixmatch_table()
    confident, unsure = torch.tensor([[9.0, 0, 0]]), torch.tensor([[0.3, 0.2, 0.0]])
    strong = torch.tensor([[0.0, 4.0, 0.0]])
    y = torch.full((1,), HIDDEN_LABEL)
    weak_sure = gated_edge_loss(torch.stack([confident, unsure]), y, table)  # weak sure, strong not
    assert weak_sure.count.item() == 1
    assert torch.allclose(weak_sure.edge_loss[0], F.cross_entropy(unsure, torch.tensor([0])))
    strong_sure = gated_edge_loss(torch.stack([unsure, strong * 3]), y, table)  # strong sure, weak not
    assert strong_sure.count.item() == 0 and strong_sure.edge_loss[0] == 0
    # the pseudo-label is the weak view's arg-max (class 0), not the strong view's (class 1)
    mixed = gated_edge_loss(torch.stack([confident, strong]), y, table)
    assert torch.allclose(mixed.edge_loss[0], F.cross_entropy(strong, torch.tensor([0])))


def test_tpl_is_pl_with_threshold_and_its_gate_scales_the_coefficient(tmp_path, data):
    g = lambda e: ssl_graph([cnn("n1")], [e])  # noqa: E731
    tpl = g(Edge("n1", "n1", "tpl"))
    assert tpl == g(Edge("n1", "n1", "pl", Gate("threshold", tau=0.95)))
    assert g(Edge("n1", "n1", "tpl", Gate("threshold", tau=0.99))) == \
        g(Edge("n1", "n1", "pl", Gate("threshold", tau=0.99)))
    assert g(Edge("n1", "n1", "tpl", Gate("linear"))) != tpl
    lowered = {gate: SSLSlots(g(Edge("n1", "n1", "tpl", gate))) for gate in
               (Gate("through"), Gate("threshold", tau=0.99), Gate("threshold", tau=0.5), Gate("linear"))}
    assert [(s.u_specs[0].gate, s.u_specs[0].tau, s.u_specs[0].coef_schedule.kind) for s in lowered.values()] == [
        ("threshold", 0.95, "none"), ("threshold", 0.99, "none"), ("threshold", 0.95, "none"),
        ("threshold", 0.95, "linear")]
    graph = g(Edge("n1", "n1", "tpl", Gate("neg_linear"), weight=2.0, src_view="weak", dst_view="strong"))
    tr = Trainer(graph, data, config(tmp_path, iterations=2, eval_every=2))
    spec = tr.u_table.specs[0]
    assert (spec.loss, spec.gate, spec.tau) == ("pl", "threshold", 0.95)
    params = tr.u_table.params_at(torch.tensor(0.25, dtype=torch.float64))
    assert params[0, 1].item() == pytest.approx(2.0 * 0.75)
    tr.fit()


# ------------------------------------------------------------ 5. hidden labels
def test_unlabelled_loss_never_reads_unlabelled_labels(tmp_path, data, monkeypatch):
    graph = ssl_graph([cnn("n1"), cnn("n2", ema_of="n1")],
                      [Edge("n1", "n1", "pl", Gate("threshold", tau=0.3)),
                       Edge("n2", "n1", "kl", Gate("linear"), src_view="weak", dst_view="weak2")])
    calls = capture_unlabelled_calls(monkeypatch)
    plain = Trainer(graph, data, config(tmp_path, "plain"))
    assert (plain.unlabeled.labels == HIDDEN_LABEL).all()
    plain.fit()
    unl_calls = [c for c in calls if c[0].shape[1] == 16]
    assert unl_calls and all((c[1] == HIDDEN_LABEL).all() for c in unl_calls)

    import ktgfast.data.semi as semi  # the trainer imports split_labeled from it at run time

    def true_labels(split, per_class, seed=0):  # unlabelled part keeps (random) real labels
        lab, unl = semi_split(split, per_class, seed)
        unl.labels = torch.randint(0, 4, unl.labels.shape)
        return lab, unl

    semi_split = semi.split_labeled
    monkeypatch.setattr(semi, "split_labeled", true_labels)
    leaky = Trainer(graph, data, config(tmp_path, "leaky"))
    assert not (leaky.unlabeled.labels == HIDDEN_LABEL).any()
    leaky.fit()
    assert_states_equal(states(plain), states(leaky))


# ------------------------------------------------------------ 6. presets on MNIST-5k
@pytest.fixture(scope="module")
def mnist():
    return get_dataset("mnist5k")


@pytest.mark.slow
@pytest.mark.parametrize("name", SSL_PRESETS)
def test_presets_validate_render_and_train_on_mnist5k(tmp_path, mnist, name):
    graph = validate(get_preset(name), model_options)
    assert graph.semi_supervised and "semi-supervised" in summary(graph)
    dot = to_dot(graph)
    if name == "mean-teacher":
        assert '"node1" -> "node2" [label="EMA"' in dot
    render(graph, tmp_path / "g.dot")
    save_graph(graph, tmp_path / "g.yaml")
    assert load_graph(tmp_path / "g.yaml") == graph
    cfg = config(tmp_path, labels_per_class=3, batch_size=16, unlabeled_batch_size=32, iterations=4,
                 eval_every=2, augment="auto", pad=4, eval_splits=["val"])
    tr = Trainer(name, mnist, cfg)
    assert len(tr.data.train) == 30 and len(tr.unlabeled) == 3500 - 30
    row = tr.fit()
    assert row["epoch"] == 2 and row["step"] == 4 and tr.step_t.item() == 4
    assert all(0 <= row[f"val_acc:{n}"] <= 100 for n in graph.node_names())
    assert math.isfinite(row["train_loss:node1"])
    assert ("mask:node1->node1" in row) == (name == "fixmatch")
    assert (tr.run_dir / "checkpoint.pt").exists() and (tr.run_dir / "metrics.csv").exists()


def test_cli_picks_the_ssl_trainer_for_semi_supervised_graphs(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--graph", "fixmatch", "--data", "mnist5k", "--labels-per-class", "2",
            "--iterations", "2", "--eval-every", "1", "--batch-size", "8", "--unlabeled-batch-size", "8",
            "--eval-splits", "val", "--tensorboard", "false", "--device", "cpu", "--out", str(out)]
    assert cli(args) == 0
    text = (out / "metrics.csv").read_text()
    assert "mask:node1->node1" in text and text.count("\n") == 3


# ------------------------------------------------------------ 7. errors
@pytest.mark.parametrize("graph, message", [
    (Graph([cnn("n1")], [Edge("label", "n1", "ce"), Edge("n1", "n1", "kl")], "n1"),
     "self-loop 'n1' -> 'n1'; only semi-supervised graphs"),
    (Graph([cnn("n1"), cnn("n2")], [Edge("label", "n1", "ce"), Edge("n2", "n1", "tpl")], "n1"),
     "'tpl' cannot|unknown loss 'tpl'"),
    (Graph([cnn("n1"), cnn("n2")], [Edge("label", "n1", "ce"), Edge("n2", "n1", dst_view="weak2")], "n1"),
     "dst_view: self-loops, EMA nodes, views and the tpl loss belong to semi-supervised graphs"),
    (ssl_graph([cnn("n1")], [Edge("n1", "n1", "kl", dst_view="strnog")]),
     "dst_view: unknown view 'strnog'; allowed: weak, weak2, strong"),
    (Graph([cnn("n1")], [Edge("label", "n1", "ce", dst_view="strong")], "n1", semi_supervised=True),
     "a label edge acts on the labelled batch"),
    (ssl_graph([cnn("n1")], [Edge("n1", "n1", "pl", Gate("correct"))]), "correct gate needs labels"),
    (ssl_graph([cnn("n1")], [Edge("n1", "n1", "tpl", Gate("sine", f=1.0))]), "tpl takes through"),
    (ssl_graph([cnn("n1")], [Edge("n1", "n1", "kl&pull")]), "attention losses are not supported"),
    (ssl_graph([cnn("n1")], [Edge("label", "n1", "tpl")]), "'tpl' cannot come from the label"),
])
def test_bad_graphs_name_the_problem(graph, message):
    with pytest.raises(GraphError, match=message):
        validate(graph, model_options)


@pytest.mark.parametrize("overrides, message", [
    (dict(labels_per_class=0), "config.labels_per_class = 0; allowed: an integer >= 1"),
    (dict(unlabeled_batch_size=-3), "config.unlabeled_batch_size = -3"),
    (dict(iterations=0), "config.iterations = 0"),
    (dict(eval_every=1.5), "config.eval_every = 1.5"),
    (dict(ema_decay=1.0), r"config.ema_decay = 1.0; allowed: a number in \[0, 1\)"),
    (dict(randaugment_m=31), "config.randaugment_m = 31"),
    (dict(randaugment_n=-1), "config.randaugment_n = -1"),
])
def test_bad_configs_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **overrides).validate()


def test_bad_runs_give_clear_errors(tmp_path, data):
    with pytest.raises(ValueError, match="class 0 has only 48 training images"):
        Trainer("fixmatch", data, config(tmp_path, labels_per_class=100))
    with pytest.raises(ValueError, match="edges between nodes but is not semi-supervised"):
        Trainer("dml", data, config(tmp_path))
    # a supervised graph with labels_per_class: the supervised baseline on the labelled set
    vanilla = Graph([cnn("n1")], [Edge("label", "n1", "ce")], "n1")
    tr = Trainer(vanilla, data, config(tmp_path, "vanilla"))
    assert tr.method == "ssl" and len(tr.data.train) == 16


# ------------------------------------------------------------ 8. schedules, frozen nodes
def test_iteration_schedule_and_learning_rates(tmp_path, data):
    tr = Trainer(ssl_graph([cnn("n1")], []), data,
                 config(tmp_path, iterations=10, eval_every=4, schedule="cosine", lr=0.1))
    assert tr.num_epochs == 3 and tr.total_steps == 10
    assert [tr.lr_factor(k) for k in (0, 5)] == [1.0, pytest.approx(math.cos(7 * math.pi * 5 / 160))]
    rows = []
    while tr.epoch < tr.num_epochs:
        rows.append(tr.train_epoch())
    assert [r["step"] for r in rows] == [4, 8, 10]
    assert tr.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * math.cos(7 * math.pi * 10 / 160))
    ms = Trainer(ssl_graph([cnn("n1")], []), data,
                 config(tmp_path, "ms", iterations=10, eval_every=4, schedule="multistep", milestones=[1, 2]))
    assert [ms.lr_factor(k) for k in (3, 4, 8)] == [1.0, 0.1, pytest.approx(0.01)]
    # defaults: eval_every = one pass over the unlabelled set, iterations = epochs x eval_every
    d = Trainer(ssl_graph([cnn("n1")], []), data,
                config(tmp_path, "d", iterations=None, eval_every=None, epochs=3))
    assert d.eval_every == (192 - 16) // 16 and d.iterations == 3 * d.eval_every


def test_frozen_node_is_pretrained_on_the_labelled_set_only(tmp_path, data):
    graph = ssl_graph([cnn("n1"), cnn("n2")], [Edge("n2", "n1", "pl", src_view="weak", dst_view="strong"),
                                               Edge("label", "n2", "ce", Gate("cutoff"))])
    tr = Trainer(graph, data, config(tmp_path, epochs=2))
    assert tr.learning == [True, False] and len(tr.data.train) == 16
    (run,) = (tmp_path / "cache" / "pretrained").glob("*-run")
    assert (run / "metrics.csv").read_text().splitlines()[-1].split(",")[1] == "4"  # 2 epochs x 16/8
    before = states(tr)[1]
    tr.fit()
    assert_states_equal([before], [states(tr)[1]])


# ------------------------------------------------------------ 9. resume
def test_resume_is_bitwise(tmp_path, data):
    graph = ssl_graph([cnn("n1"), cnn("n2", ema_of="n1")], [
        Edge("n1", "n1", "pl", Gate("threshold", tau=0.4)),
        Edge("n2", "n1", "tpl", Gate("linear"), src_view="weak", dst_view="weak2"),
        Edge("n2", "n1", "kl", src_view="weak", dst_view="strong", weight=0.5),
    ])
    kw = dict(iterations=9, eval_every=3, schedule="cosine", ema_decay=0.9)
    straight = Trainer(graph, data, config(tmp_path, "straight", **kw))
    straight.fit()

    first = Trainer(graph, data, config(tmp_path, "resumed", **kw))
    first.train_epoch()
    resumed = Trainer(graph, data, config(tmp_path, "resumed", **kw), resume=True)
    assert resumed.epoch == 1 and resumed.step_t.item() == 3
    resumed.fit()
    assert_states_equal(states(straight), states(resumed))
    timeless = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}
                for r in straight.history + resumed.history]
    assert timeless[:3] == timeless[3:]


# ------------------------------------------------------------ 10. search spaces
@pytest.mark.parametrize("name", ["ssl-fixmatch-2nodes", "ssl-diverse-2nodes", "ssl-diverse-3nodes"])
def test_ssl_spaces_sample_valid_semi_supervised_graphs(name):
    space = load_space(name)
    assert space.semi_supervised and space.node_names()[0] == "node1" and space.size("cifar100") > 1e4
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    emas, valid = 0, 0
    for _ in range(40):
        trial = study.ask()
        graph = space.sample(trial, "cifar100")
        assert graph.semi_supervised and graph.target_name == "node1"
        try:
            validate(graph, model_options)
            valid += 1
        except GraphError as exc:
            assert "never learns" in str(exc)
        emas += any(n.ema_of for n in graph.nodes)
        for e in graph.edges:
            if e.src != "label":
                assert (e.src_view, e.dst_view) == (space.views["src"], space.views["dst"])
        study.tell(trial, 0.0)
    assert valid >= 35 and emas > 0
    models = {n.model for n in graph.nodes}
    assert models <= {"wrn28_2", "resnet32", "wrn28_6"}


def test_space_score_best_and_target():
    fixm, diverse = load_space("ssl-fixmatch-2nodes"), load_space("ssl-diverse-2nodes")
    graph = Graph([Node("node1"), Node("node2")], [], "node1")
    row = {"val_acc:node1": 50.0, "val_acc:node2": 70.0}
    assert fixm.score_of(row, graph) == 70.0 and diverse.score_of(row, graph) == 50.0


def test_ssl_space_errors(tmp_path):
    from ktgfast.search.space import SearchSpace

    with pytest.raises(ValueError, match="edge_losses: only semi-supervised spaces"):
        SearchSpace.from_dict({"nodes": 2, "edge_losses": ["kl"]})
    with pytest.raises(ValueError, match="edge_losses: .* expected a non-empty list of kl, cos, pl, tpl"):
        SearchSpace.from_dict({"nodes": 2, "semi_supervised": True, "edge_losses": ["ce"]})
    with pytest.raises(ValueError, match="gates: .* semi-supervised space takes a list of"):
        SearchSpace.from_dict({"nodes": 2, "semi_supervised": True, "gates": ["correct"]})
    with pytest.raises(ValueError, match="views: .* expected"):
        SearchSpace.from_dict({"nodes": 2, "semi_supervised": True, "views": {"src": "weak"}})
    with pytest.raises(ValueError, match="score: 'max'; allowed: target, best"):
        SearchSpace.from_dict({"nodes": 2, "score": "max"})
