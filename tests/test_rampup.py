"""Edge ramp-ups (docs/rampup.md): the graph's and an edge's ``rampup``, their
lowering to the edge table's coefficient schedules, the presets' defaults, the
YAML round trip and validation; and ``schedule: auto`` with the ``lr`` column."""
from __future__ import annotations

import csv
import math

import pytest
import torch

import ktgfast.ops as ops
import ktgfast.reference as ref
from ktgfast.edges import LABEL, CoefSchedule, EdgeTable
from ktgfast.graph import Edge, Gate, Graph, GraphError, Node, get_preset, summary, validate
from ktgfast.graph.spec import NO_RAMP, Rampup
from ktgfast.train import TrainConfig, Trainer
from ktgfast.train.build import resolved_schedule
from ktgfast.train.lowering import SSLSlots

F64 = torch.float64
needs_ext = pytest.mark.skipif(not ops.extension_available(), reason="needs the compiled extension")

# Hand-computed factors for length L = 0.5 at progress p: r = min(p / L, 1) =
# 0, 0.2, 0.5, 1, 1; sigmoid exp(-5 (1 - r)²) = exp(-5), exp(-3.2), exp(-1.25), 1, 1.
PROGRESS = [0.0, 0.1, 0.25, 0.5, 0.8]
HAND = {"linear": [0.0, 0.2, 0.5, 1.0, 1.0],
        "sigmoid": [math.exp(-5), math.exp(-3.2), math.exp(-1.25), 1.0, 1.0]}


def _config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=32, lr=0.05, augment="none", tensorboard=False, device="cpu",
                progress_bar=False, verbose=False, checkpoint=False, out=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ lowering
def test_graph_rampup_applies_to_node_edges_only_and_edges_override():
    g = Graph([Node("a"), Node("b"), Node("c")],
              [Edge(LABEL, "a", "ce"), Edge("b", "a"), Edge("c", "a", rampup=NO_RAMP),
               Edge("a", "b", rampup=Rampup("sigmoid", 0.5))], "a", rampup=Rampup("linear", 0.3))
    validate(g)
    assert [s.coef_schedule for s in g.edge_specs()] == [
        CoefSchedule("none"), CoefSchedule("ramp_linear", length=0.3), CoefSchedule("none"),
        CoefSchedule("ramp_sigmoid", length=0.5)]


def test_label_edge_rampup_and_bad_values_are_one_line_errors_with_the_path():
    g = Graph([Node("a")], [Edge(LABEL, "a", "ce", rampup=Rampup("linear", 0.5))], "a")
    with pytest.raises(GraphError, match=r"^graph.edges\[0\].rampup: label edges are never ramped"):
        validate(g)
    with pytest.raises(GraphError, match=r"^graph.rampup.length: 2.0; allowed: a number in \(0, 1\]$"):
        validate(Graph([Node("a")], [Edge(LABEL, "a", "ce")], "a", rampup=Rampup("linear", 2.0)))
    data = get_preset("dml", rampup="none").to_dict()
    for bad, msg in (({"kind": "linear", "length": 2.0}, r"graph.rampup.length: 2.0; allowed: a number in \(0, 1\]"),
                     ({"kind": "cubic", "length": 0.5}, r"graph.rampup.kind: 'cubic'; allowed: linear, sigmoid"),
                     ({"kind": "linear"}, r"graph.rampup.length: missing"),
                     ("fast", r"graph.rampup: 'fast'; allowed: none or")):
        with pytest.raises(ValueError, match="^" + msg) as err:
            Graph.from_dict({**data, "rampup": bad})
        assert "\n" not in str(err.value)
    data["edges"][2]["rampup"] = {"kind": "sigmoid", "length": 0.0}
    with pytest.raises(ValueError, match=r"^graph.edges\[2\].rampup.length: 0.0; allowed"):
        Graph.from_dict(data)


def test_tpl_edge_under_a_linear_gate_cannot_also_be_ramped():
    g = Graph([Node("a")], [Edge(LABEL, "a", "ce"), Edge("a", "a", "tpl", Gate("linear"))], "a",
              semi_supervised=True, rampup=Rampup("linear", 0.5))
    with pytest.raises(GraphError, match=r"^graph.edges\[1\].rampup: a tpl edge under a linear gate"):
        validate(g)
    g.edges[1] = Edge("a", "a", "tpl", Gate("linear"), rampup=NO_RAMP)
    validate(g)
    assert [s.coef_schedule.kind for s in SSLSlots(g).u_specs] == ["linear"]


def test_ssl_lowering_carries_the_ramp():
    slots = SSLSlots(validate(get_preset("mean-teacher")))
    assert [s.coef_schedule for s in slots.u_specs] == [CoefSchedule("ramp_sigmoid", length=0.25)]
    assert [s.coef_schedule.kind for s in slots.edge_specs] == ["none"]


# ---------------------------------------------------------------- semantics
def _dml_specs(kind):
    g = get_preset("dml", rampup=kind, rampup_length=0.5)
    return g.edge_specs(), get_preset("dml", rampup="none").edge_specs()


@pytest.mark.parametrize("kind", ["linear", "sigmoid"])
def test_ramp_scales_the_peer_edges_by_hand_values_reference(kind):
    ramped, plain = _dml_specs(kind)
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(2, 6, 5, generator=g, dtype=F64), torch.randint(0, 5, (6,), generator=g)
    for p, factor in zip(PROGRESS, HAND[kind]):
        pt = torch.tensor(p, dtype=F64)
        base, out = ref.gated_edge_loss(z, y, plain, pt), ref.gated_edge_loss(z, y, ramped, pt)
        want = base.edge_loss * torch.tensor([1.0, 1.0, factor, factor], dtype=F64)
        torch.testing.assert_close(out.edge_loss, want, rtol=1e-13, atol=0)


@needs_ext
@pytest.mark.parametrize("kind", ["linear", "sigmoid"])
def test_one_step_trainer_table_scales_the_peer_loss_by_the_ramp(tmp_path, data, kind):
    """The trainer's own edge table (lowered from the preset) on the fused op:
    at progress p the peer edges' losses are the unramped ones times the
    hand-computed factor, label edges unchanged; the op agrees with the reference."""
    trainer = Trainer("dml", data, _config(tmp_path, kind),
                      graph_params={"model": "cnn_small", "rampup": kind, "rampup_length": 0.5})
    table = trainer.step.table
    assert isinstance(table, EdgeTable) and table.schedule is not None
    _, plain = _dml_specs(kind)
    g = torch.Generator().manual_seed(5)
    z, y = torch.randn(2, 8, data.num_classes, generator=g, dtype=F64), torch.randint(0, data.num_classes, (8,), generator=g)
    peer = [i for i, s in enumerate(table.specs) if not s.from_label]
    assert len(peer) == 2
    for p, factor in zip(PROGRESS, HAND[kind]):
        pt = torch.tensor(p, dtype=F64)
        out = ops.gated_edge_loss(z, y, table, pt)
        base = ops.gated_edge_loss(z, y, plain, pt)
        want = base.edge_loss.clone()
        want[peer] *= factor
        torch.testing.assert_close(out.edge_loss, want, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(out.edge_loss, ref.gated_edge_loss(z, y, table.specs, pt).edge_loss,
                                   rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ presets
@pytest.mark.parametrize("name,kind,length", [
    ("dml", "linear", 0.2), ("ens-dml", "linear", 0.2), ("ens-push-pull-3node", "linear", 0.2),
    ("mean-teacher", "sigmoid", 0.25), ("pi-model", "sigmoid", 0.25)])
def test_presets_that_need_it_ramp_by_default(name, kind, length):
    g = validate(get_preset(name))
    assert g.rampup == Rampup(kind, length)
    assert get_preset(name, rampup="none").rampup is None
    assert f"{kind} ramp-up over {length:g} of training" in summary(g)


@pytest.mark.parametrize("name", ["vanilla", "kd", "ens-independent", "ktg-found-2node",
                                  "ens-ktg-found-3node", "fixmatch", "ssl-supervised"])
def test_other_presets_have_no_ramp(name):
    g = get_preset(name)
    assert g.rampup is None and all(s.coef_schedule.kind == "none" for s in g.edge_specs())
    assert "ramp" not in summary(g)


def test_preset_rampup_parameters_are_checked():
    with pytest.raises(ValueError, match="dml: rampup = 'cubic'; allowed: none, linear, sigmoid"):
        get_preset("dml", rampup="cubic")
    with pytest.raises(ValueError, match="rampup_length = 1.5; allowed: a number in"):
        get_preset("dml", rampup_length=1.5)


# --------------------------------------------------------------- round trip
def test_yaml_round_trip_and_identity():
    g = get_preset("dml", k=3)
    g.edges[2] = Edge(g.edges[2].src, g.edges[2].dst, weight=0.5, rampup=NO_RAMP)
    g.edges[3] = Edge(g.edges[3].src, g.edges[3].dst, weight=0.5, rampup=Rampup("sigmoid", 0.4))
    back = Graph.from_dict(g.to_dict())
    assert back.to_dict() == g.to_dict() and back == g and back.digest() == g.digest()
    assert g.to_dict()["rampup"] == {"kind": "linear", "length": 0.2}
    # the graph's ramp and the same ramp on every node edge compute the same thing
    per_edge = get_preset("dml", rampup="none")
    per_edge.edges = [e if e.src == LABEL else Edge(e.src, e.dst, rampup=Rampup("linear", 0.2))
                      for e in per_edge.edges]
    assert per_edge == get_preset("dml") and per_edge != get_preset("dml", rampup="none")
    assert "rampup" not in get_preset("dml", rampup="none").key()


# ------------------------------------------------------- schedule: auto, lr
def test_auto_schedule_is_the_recipes(data):
    from ktgfast.data.recipes import RECIPES

    assert TrainConfig().schedule == "auto"
    assert RECIPES["cifar100"].schedule == RECIPES["cifar10"].schedule == "multistep"
    assert RECIPES["mnist5k"].schedule == "cosine" and data.name == "synthetic"
    assert resolved_schedule(TrainConfig(), data) == "cosine"
    assert resolved_schedule(TrainConfig(schedule="multistep"), data) == "multistep"
    assert TrainConfig(schedule="multistep").resolved_milestones() == [60, 120, 180]


def test_lr_column_is_the_lr_each_epoch_trained_at_under_the_default_schedule(tmp_path, data):
    trainer = Trainer("vanilla", data, _config(tmp_path, epochs=3, lr=0.1),
                      graph_params={"model": "cnn_small"})
    trainer.fit()
    with open(trainer.run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    want = [0.1 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]  # cosine per epoch
    assert [float(r["lr"]) for r in rows] == pytest.approx(want, rel=1e-9)


def test_graph_rampup_none_set_in_code_means_no_ramp():
    g = validate(Graph([Node("a"), Node("b")], [Edge(LABEL, "a", "ce"), Edge("b", "a")], "a",
                       rampup=NO_RAMP))
    assert [s.coef_schedule.kind for s in g.edge_specs()] == ["none", "none"]
    assert "rampup" not in g.to_dict() and "ramp" not in summary(g)
    assert g.digest() == Graph(g.nodes, g.edges, "a").digest()


def test_auto_schedule_of_the_cifar_recipes_is_the_papers_multistep():
    from types import SimpleNamespace

    for name in ("cifar10", "cifar100"):
        cifar = SimpleNamespace(name=name, image_size=32)
        assert resolved_schedule(TrainConfig(), cifar) == "multistep"
    assert resolved_schedule(TrainConfig(), SimpleNamespace(name="dogs", image_size=224)) == "cosine"
    assert resolved_schedule(TrainConfig(schedule="constant"), SimpleNamespace(name="cifar10")) == "constant"


def test_steps_get_the_recipe_schedule_of_their_dataset():
    """``schedule: auto`` reaches the per-epoch scheduler through the dataset:
    multistep on CIFAR, cosine on the bundled data."""
    from types import SimpleNamespace

    from ktgfast.train import TrainConfig
    from ktgfast.train.build import epoch_scheduler

    opt = lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)  # noqa: E731
    cifar = SimpleNamespace(name="cifar100", image_size=32)
    mnist = SimpleNamespace(name="mnist5k", image_size=28)
    assert isinstance(epoch_scheduler(opt(), TrainConfig(), cifar), torch.optim.lr_scheduler.MultiStepLR)
    assert isinstance(epoch_scheduler(opt(), TrainConfig(), mnist),
                      torch.optim.lr_scheduler.CosineAnnealingLR)
