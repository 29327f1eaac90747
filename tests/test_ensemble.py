"""Ensemble KTG (the thesis ch. 4; docs/ensemble.md): ensemble nodes, loss designs, presets, the ensemble
search space, and the trainer with ensembles."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ktgfast import reference
from ktgfast.data import get_dataset
from ktgfast.graph import (
    ENSEMBLE_MODEL,
    Edge,
    Gate,
    Graph,
    GraphError,
    Node,
    get_preset,
    summary,
    to_dot,
    validate,
)
from ktgfast.models import build_model
from ktgfast.search.space import SearchSpace
from ktgfast.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 4


def config(tmp_path, **kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4,
                schedule="constant", augment="none", tensorboard=False, device="cpu",
                progress_bar=False, out=str(tmp_path / "run"), eval_splits=["val"],
                pretrain_cache=str(tmp_path / "cache"))
    base.update(kw)
    return TrainConfig(**base)


def ens_graph(edges=(), members=None, target="ens") -> Graph:
    opts = {"members": members} if members else {}
    nodes = [Node("a", "cnn_small"), Node("b", "cnn_small"), Node("c", "cnn_small"),
             Node("ens", ENSEMBLE_MODEL, opts)]
    base = [Edge("label", n, "ce") for n in "abc"]
    return Graph(nodes, base + list(edges), target)


# ------------------------------------------------------------------ graphs
def test_loss_designs_are_aliases_of_explicit_losses():
    a = ens_graph([Edge("a", "b", "prob+att+"), Edge("b", "a", "prob-att-"), Edge("c", "a", "att-")])
    b = ens_graph([Edge("a", "b", "kl&pull"), Edge("b", "a", "cos&push"), Edge("c", "a", "push")])
    validate(a)
    assert a.key() == b.key()
    assert [e.loss for e in a.canonical().edges if e.src != "label"] == ["cos&push", "push", "kl&pull"]
    assert Edge("a", "b", "prob+att+").parts() == ("kl", "pull")
    assert Edge("a", "b", "att+").parts() == (None, "pull")
    assert Edge("a", "b", "cos").parts() == ("cos", None)


def test_edge_specs_split_probability_and_attention_parts():
    g = ens_graph([Edge("a", "b", "kl&pull", gate=Gate("correct"), weight=0.5), Edge("b", "c", "push")])
    prob = [(s.src, s.dst, s.loss, s.gate) for s in g.edge_specs()]
    att = [(s.src, s.dst, s.loss, s.gate, s.weight) for s in g.attention_specs()]
    assert prob[-1] == (0, 1, "kl", "correct")
    assert len(prob) == 4  # three label edges + the kl part
    assert att == [(0, 1, "pull", "correct", 0.5), (1, 2, "push", "through", 1.0)]
    assert g.has_attention_edges()
    assert not ens_graph([Edge("a", "b", "kl")]).has_attention_edges()


def test_graphs_without_attention_keep_their_key():
    g = get_preset("dml")
    assert "crop_sizes" not in g.key() and "attention_pull" not in g.key()
    g2 = Graph.from_dict({**g.to_dict(), "crop_sizes": [3, 5], "attention_pull": "sum"})
    assert g2.crop_sizes == [3, 5] and g2.attention_pull == "sum"
    assert g2.key() != g.key()


@pytest.mark.parametrize("edit,match", [
    (lambda g: g.edges.append(Edge("a", "ens", "kl")), "ensemble node"),
    (lambda g: g.edges.append(Edge("ens", "a", "kl&pull")), "needs an attention map"),
    (lambda g: g.edges.append(Edge("label", "a", "pull")), "cannot come from the label"),
    (lambda g: g.edges.append(Edge("a", "b", "kl&cos")), "unknown loss 'kl&cos'"),
    (lambda g: g.edges.append(Edge("a", "b", "pull&push")), "unknown loss"),
    (lambda g: g.edges.append(Edge("a", "b", "prob++")), "allowed: kl, ce, cos, pl, pull, push"),
    (lambda g: setattr(g, "attention_pull", "max"), "attention_pull"),
    (lambda g: setattr(g, "crop_sizes", [3, 0]), "crop_sizes"),
    (lambda g: g.nodes.__setitem__(3, Node("ens", ENSEMBLE_MODEL, {"members": ["a", "zz"]})),
     "'zz' is not a model node"),
    (lambda g: g.nodes.__setitem__(3, Node("ens", ENSEMBLE_MODEL, {"weights": 1})), "unknown option"),
    (lambda g: g.nodes.__setitem__(3, Node("ens", ENSEMBLE_MODEL, frozen=True)), "no weights"),
])
def test_bad_ensemble_graphs_are_rejected(edit, match):
    g = ens_graph()
    edit(g)
    with pytest.raises(GraphError, match=match):
        validate(g)


def test_ensemble_target_learns_through_its_members():
    g = ens_graph(members=["a", "b"])
    assert g.members("ens") == ["a", "b"] and g.learns("ens")
    frozen = Graph([Node("a", "mlp", frozen=True), Node("e", ENSEMBLE_MODEL)], [], "e")
    with pytest.raises(GraphError, match="never learns"):
        validate(frozen)


def test_ensemble_presets_validate_and_draw():
    for name, n_models in [("ens-independent", 2), ("ens-dml", 2), ("ens-ktg-found-3node", 3),
                           ("ens-push-pull-3node", 3)]:
        g = validate(get_preset(name))
        assert g.target_name == "ensemble" and g.node("ensemble").is_ensemble
        assert len(g.members("ensemble")) == n_models
        assert "mean of" in summary(g)
        assert 'style=dotted' in to_dot(g)
    dml = get_preset("ens-dml", k=3)
    assert {e.weight for e in dml.edges if e.src != "label"} == {0.5}  # 1/(K-1), DML's peer mean
    with pytest.raises(ValueError, match="at least two"):
        get_preset("ens-dml", k=1)


# ------------------------------------------------------------ search space
class FixedTrial:
    """An Optuna-like trial answering every categorical with a rotating choice."""

    def __init__(self):
        self.params, self.i = {}, 0

    def suggest_categorical(self, name, choices):
        self.i += 1
        self.params[name] = choices[self.i % len(choices)]
        return self.params[name]


def test_ensemble_space_samples_designs_and_targets_the_ensemble():
    space = SearchSpace.from_dict({"name": "e", "nodes": 3, "ensemble": True, "target_model": "cnn_small",
                                   "loss_designs": ["prob+", "prob-", "att+", "att-", "prob+att+",
                                                    "prob-att-"]})
    trial = FixedTrial()
    g = validate(space.sample(trial, "synthetic"))
    assert g.target_name == "ensemble" and g.members("ensemble") == ["node1", "node2", "node3"]
    assert {n.model for n in g.nodes if not n.is_ensemble} == {"cnn_small"}
    designs = [e.loss for e in g.edges if e.src != "label" and e.gate.kind != "cutoff"]
    assert designs and set(designs) <= {"prob+", "prob-", "att+", "att-", "prob+att+", "prob-att-"}
    # no design parameter is asked for a cutoff edge (it would split duplicates)
    cut = [f"loss_{e.src}_{e.dst}" for e in g.edges if e.gate.kind == "cutoff" and e.src != "label"]
    assert cut and not set(cut) & set(trial.params)
    # 4 gates per label edge; per model edge: cutoff, or 3 gates x 6 designs
    assert space.size() == 4 ** 3 * (1 + 3 * 6) ** 6
    with pytest.raises(ValueError, match="loss_designs"):
        SearchSpace.from_dict({"name": "e", "nodes": 2, "ensemble": True, "loss_designs": ["kl"]})


# ----------------------------------------------------------------- trainer
def step_with_copies(t: Trainer):
    """One trainer step on its first batch; returns the batch and fresh copies
    (train mode) of the three model nodes as they were before the step."""
    init = [{k: v.clone() for k, v in m.state_dict().items()} for m in t.models[:3]]
    x, y, _ = next(iter(t.train_loader))
    t.train_step(x, y)
    models = []
    for state in init:
        m = build_model("cnn_small", CLASSES, in_channels=1)
        m.load_state_dict(state)
        models.append(m.train())
    return x, y, models


@pytest.mark.slow
def test_ensemble_node_accuracy_is_that_of_mean_logits(tmp_path, data):
    g = ens_graph(members=["a", "c"])
    t = Trainer(g, data, config(tmp_path))
    t.fit()
    acc = t.evaluate("val")
    x = (data.val.images.float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) \
        / torch.tensor(data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        z = [m.eval()(x) for m in t.models[:3]]
    y = data.val.labels
    mean_ac = 100.0 * ((z[0] + z[2]) / 2).argmax(-1).eq(y).double().mean().item()
    mean_all = 100.0 * ((z[0] + z[1] + z[2]) / 3).argmax(-1).eq(y).double().mean().item()
    assert acc["ens"] == pytest.approx(mean_ac)
    assert acc["ensemble"] == pytest.approx(mean_all)
    assert set(acc) == {"a", "b", "c", "ens", "ensemble"}
    assert "train_loss:ens" not in t.history[-1]


def test_knowledge_from_an_ensemble_node_matches_reference(tmp_path, data):
    """An edge ens -> c carries KL from the (detached) mean of a and b."""
    g = ens_graph([Edge("ens", "c", "kl", T=2.0)], members=["a", "b"])
    t = Trainer(g, data, config(tmp_path, lr=0.1, momentum=0.0, weight_decay=0.0))
    x, y, models = step_with_copies(t)
    z = [m(x) for m in models]
    ens = ((z[0] + z[1]) / 2).detach()
    loss_c = F.cross_entropy(z[2], y) + 4.0 * F.kl_div(F.log_softmax(z[2] / 2, -1),
                                                        F.softmax(ens / 2, -1), reduction="batchmean")
    loss_c.backward()
    for p_ref, p in zip(models[2].parameters(), t.models[2].parameters()):
        assert torch.allclose(p_ref.detach() - 0.1 * p_ref.grad, p.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_ensemble_presets_train_on_real_data(tmp_path):
    mnist = get_dataset("mnist5k")
    for name in ("ens-independent", "ens-dml"):
        t = Trainer(get_preset(name, model="cnn_small"), mnist,
                    config(tmp_path / name, epochs=1, batch_size=64, lr=0.02, augment="auto"))
        row = t.fit()
        assert row["val_acc:ensemble"] > 50.0, row
        assert math.isfinite(row["train_loss:node1"])


def test_attention_edges_match_reference_step(tmp_path, data):
    """One trainer step of a graph with pull and push attention edges (and a
    gated prob part) equals the step computed from ktgfast.reference."""
    edges = [Edge("a", "b", "kl&pull", gate=Gate("correct")), Edge("b", "c", "cos&push"),
             Edge("c", "a", "att+", gate=Gate("linear"), weight=2.0)]
    g = ens_graph(edges)
    g.crop_sizes = [1, 3]
    t = Trainer(g, data, config(tmp_path, lr=0.1, momentum=0.0, weight_decay=0.0))
    x, y, models = step_with_copies(t)
    outs = [m.forward_outputs(x) for m in models]
    z = torch.stack([o.logits for o in outs] + [torch.stack([o.logits for o in outs]).mean(0)])
    q = torch.stack([o.attention for o in outs] + [torch.zeros_like(outs[0].attention)])
    progress = torch.tensor(0.0, dtype=torch.float64)
    prob = reference.gated_edge_loss(z, y, g.edge_specs(), progress).node_loss
    att = reference.attention_crop_loss(q, z.detach(), y, g.attention_specs(), progress, (1, 3))
    (prob.sum() + att.node_loss.sum()).backward()
    for i in range(3):
        for p_ref, p in zip(models[i].parameters(), t.models[i].parameters()):
            assert torch.allclose(p_ref.detach() - 0.1 * p_ref.grad, p.detach(), atol=1e-5, rtol=1e-4)
    # the linear c -> a edge is still closed at step 0; the pull a -> b is not
    assert att.edge_loss[2].item() == 0.0 and att.edge_loss[0].item() != 0.0


def test_abn_nodes_train_their_attention_branch(tmp_path):
    """ABN's attention-branch logits get the node's label edge (same gate and
    weight) and the loss is counted as the node's."""
    data = get_dataset("synthetic", val_size=32, n_train=64, n_test=32, num_classes=CLASSES,
                       channels=3, image_size=32, noise=150.0)
    g = Graph([Node("a", "abn_resnet20", {"width": 4}), Node("ens", ENSEMBLE_MODEL)],
              [Edge("label", "a", "ce", gate=Gate("linear"), weight=0.5)], "ens")
    t = Trainer(g, data, config(tmp_path, batch_size=16))
    assert t.slots.aux == [2, None] and t.slots.owner == [0, 1, 0]
    aux_edge = t.table.specs[-1]
    assert (aux_edge.src, aux_edge.dst, aux_edge.gate, aux_edge.weight) == ("label", 2, "linear", 0.5)
    x, y, _ = next(iter(t.train_loader))
    t.step_t.fill_(t.progress_div)  # progress 1: the linear gate is open
    model = t.models[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = t.train_step(x, y)
    ref = build_model("abn_resnet20", CLASSES, in_channels=3, width=4)
    ref.load_state_dict(before)
    out = ref.forward_outputs(x)
    expected = 0.5 * (F.cross_entropy(out.logits, y) + F.cross_entropy(out.aux_logits, y))
    assert loss[0].item() == pytest.approx(expected.item(), rel=1e-4)
