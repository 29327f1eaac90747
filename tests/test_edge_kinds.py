"""The table of edge kinds (ktgfast.edges.kinds): its codes against the C++
enums, each entry's reference against the fused ops, mixup forms, gate
parameters from YAML to the packed table, coefficient schedules on the ops and
the reference, and the import structure of ktgfast.edges / ktgfast.graph."""
from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import optuna
import pytest
import torch

import ktgfast.ops as ops
import ktgfast.reference as ref
from ktgfast.edges import (
    ATTENTION_LOSS_KINDS, EDGE_PARAM_COLUMNS, GATE_KINDS, GATES, LABEL, LABEL_GATE_FORMS,
    LABEL_SOURCE, LOSS_KINDS, LOSSES, MAX_CROPS, PULL_NORMS, REDUCTIONS, SCHEDULE_KINDS, SCHEDULES,
    AttentionEdgeTable, CoefSchedule, EdgeSpec, EdgeTable, Gate, GateSource, gate_weight,
)
from ktgfast.edges.kinds import EDGE_INDEX_COLUMNS
from ktgfast.graph import Edge, Graph, GraphError, Node, validate
from ktgfast.graph.ssl import lower_edge
from ktgfast.models import list_models
from ktgfast.search.space import builtin_spaces, load_space

ROOT = Path(__file__).resolve().parents[1]
HEADERS = sorted((ROOT / "csrc" / "common").glob("*.h"))
F64 = torch.float64

needs_ext = pytest.mark.skipif(not ops.extension_available(), reason="needs the compiled extension")


# ---------------------------------------------------------------------------
# The C++ enums

def _enums() -> dict[str, dict[str, int]]:
    """Every ``enum Name : type { kA = 0, ... }`` of csrc/common/*.h."""
    found: dict[str, dict[str, int]] = {}
    for header in HEADERS:
        text = re.sub(r"//[^\n]*", "", header.read_text())
        for name, body in re.findall(r"\benum\s+(\w+)\s*:\s*\w+\s*\{([^}]*)\}", text):
            values = dict((k, int(v)) for k, v in re.findall(r"\b(k\w+)\s*=\s*(-?\d+)", body))
            assert values, f"{header.name}: enum {name} has no explicit values"
            found[f"{header.name}:{name}"] = values
    return found


def _snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", camel).lower()  # NegLinear -> neg_linear


def _check_enum(enum: dict[str, int], entries, prefix: str, count: str | None):
    values = {k: v for k, v in enum.items() if not k.startswith("kNum")}
    assert values == {e.cpp: e.code for e in entries}
    for e in entries:  # the C++ name is the Python name
        assert e.cpp.startswith(prefix) and _snake(e.cpp[len(prefix):]) == e.name
    if count is not None:
        assert enum[count] == len(entries)


def test_gate_and_loss_codes_match_the_cpp_enums():
    enums = _enums()
    _check_enum(enums["gated_edge_loss.h:GateKind"], list(GATES.values()), "kGate", "kNumGateKinds")
    prob = [k for k in LOSSES.values() if k.name in LOSS_KINDS]
    att = [k for k in LOSSES.values() if k.name in ATTENTION_LOSS_KINDS]
    assert len(prob) + len(att) == len(LOSSES)
    _check_enum(enums["gated_edge_loss.h:LossKind"], prob, "kLoss", "kNumLossKinds")
    _check_enum(enums["attention_crop.h:AttentionLossKind"], att, "kAtt", "kNumAttLossKinds")
    assert GATE_KINDS == {g.name: g.code for g in GATES.values()}
    assert LOSS_KINDS == {k.name: k.code for k in prob}
    assert ATTENTION_LOSS_KINDS == {k.name: k.code for k in att}


def test_table_columns_and_small_enums_match_the_cpp():
    enums = _enums()
    assert enums["gated_edge_loss.h:Reduction"] == {f"kReduce{k.title()}": v for k, v in REDUCTIONS.items()}
    assert enums["attention_crop.h:PullNorm"] == {f"kPull{k.title()}": v for k, v in PULL_NORMS.items()}
    cols = {"src": "kColSrc", "dst": "kColDst", "loss": "kColLoss", "gate": "kColGate", "T": "kColTemp",
            "coef": "kColCoef", "gate_a": "kColGateA", "gate_b": "kColGateB"}
    assert enums["gated_edge_loss.h:EdgeIndexCol"] == {cols[c]: i for i, c in enumerate(EDGE_INDEX_COLUMNS)}
    assert enums["gated_edge_loss.h:EdgeParamCol"] == {cols[c]: i for i, c in enumerate(EDGE_PARAM_COLUMNS)}
    text = "\n".join(h.read_text() for h in HEADERS)
    assert re.search(rf"kLabelSource\s*=\s*{LABEL_SOURCE}\s*;", text)
    assert re.search(rf"kMaxCrops\s*=\s*{MAX_CROPS}\s*;", text)
    # every gate parameter packs into a column the kernel reads
    for g in GATES.values():
        assert sorted(p.column for p in g.params) == sorted({p.column for p in g.params})
        assert all(p.column in ("gate_a", "gate_b") for p in g.params)


def test_cpp_error_messages_list_the_table():
    host = "\n".join((ROOT / "csrc" / "common" / n).read_text()
                     for n in ("gated_edge_loss_host.h", "attention_crop_host.h"))
    flat = re.sub(r'"\s*\n\s*"', "", host)  # join C++ string literals split over lines

    def listing(kinds):
        return ", ".join(f"{v} {k}" for k, v in kinds.items())

    assert f"allowed: {listing(LOSS_KINDS)}" in flat
    assert f"allowed: {listing(ATTENTION_LOSS_KINDS)}" in flat
    assert flat.count(f"allowed: {listing(GATE_KINDS)}") == 2


def test_enum_parser_sees_a_mismatch():
    # the check above would fail on a renumbered or renamed gate
    enum = dict(_enums()["gated_edge_loss.h:GateKind"])
    enum["kGateSine"], enum["kGateThreshold"] = enum["kGateThreshold"], enum["kGateSine"]
    with pytest.raises(AssertionError):
        _check_enum(enum, list(GATES.values()), "kGate", "kNumGateKinds")
    enum = dict(_enums()["gated_edge_loss.h:GateKind"])
    enum["kGateSinus"] = enum.pop("kGateSine")
    with pytest.raises(AssertionError):
        _check_enum(enum, list(GATES.values()), "kGate", "kNumGateKinds")


# ---------------------------------------------------------------------------
# Each entry's reference against the fused ops

def _case(seed: int, M: int = 3, B: int = 16, C: int = 7):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(M, B, C, generator=g, dtype=F64) * 2
    y = torch.randint(0, C, (B,), generator=g)
    y[::2] = z[0].argmax(-1)[::2]  # about half correct from slot 0
    return z, y


GATE_CASES = [Gate("through"), Gate("cutoff"), Gate("linear"), Gate("neg_linear"), Gate("correct"),
              Gate("sine", f=0.7, phi=0.4), Gate("threshold", tau=0.4)]


def test_gate_cases_cover_the_table():
    assert sorted(g.kind for g in GATE_CASES) == sorted(GATES)


@needs_ext
@pytest.mark.parametrize("gate", GATE_CASES, ids=lambda g: g.kind)
@pytest.mark.parametrize("from_label", [False, True], ids=["node", "label"])
@pytest.mark.parametrize("progress", [0.0, 0.3, 1.0])
def test_gate_reference_matches_the_op(gate, from_label, progress):
    z, y = _case(1)
    src = LABEL if from_label else 0
    spec = EdgeSpec(src=src, dst=1, loss="ce" if from_label else "kl", gate=gate, T=2.0, weight=0.5)
    out = ops.gated_edge_loss(z, y, [spec], progress)
    p = torch.tensor(progress, dtype=F64)
    source = None if from_label else GateSource(z[0], y)
    w = gate_weight(gate.kind, gate.as_dict(), p, source) * torch.ones(len(y), dtype=F64)
    a = LOSSES[spec.loss].reference(z[1], None if from_label else z[0], y, spec.T)
    expected = 0.0 if GATES[gate.kind].skip else \
        spec.coef * torch.where(w > 0, w * a, torch.zeros_like(a)).sum() / len(y)
    torch.testing.assert_close(out.edge_loss[0], torch.as_tensor(expected, dtype=F64), rtol=1e-12, atol=1e-12)
    assert int(out.count[0]) == int((w > 0).sum())
    if GATES[gate.kind].label_passes and from_label:
        assert int(out.count[0]) == len(y)


@needs_ext
@pytest.mark.parametrize("loss", list(LOSS_KINDS))
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_probability_loss_reference_matches_the_op(loss, T):
    z, y = _case(2)
    src = LABEL if loss == "ce" else 2
    spec = EdgeSpec(src=src, dst=0, loss=loss, T=T)
    out = ops.gated_edge_loss(z, y, [spec])
    a = LOSSES[loss].reference(z[0], None if src == LABEL else z[2], y, T)
    torch.testing.assert_close(out.edge_loss[0], spec.coef * a.mean(), rtol=1e-12, atol=1e-12)
    assert spec.coef == (T**2 if LOSSES[loss].t2 else 1.0)


@needs_ext
@pytest.mark.parametrize("loss", list(ATTENTION_LOSS_KINDS))
@pytest.mark.parametrize("gate", GATE_CASES, ids=lambda g: g.kind)
@pytest.mark.parametrize("pull", list(PULL_NORMS))
def test_attention_loss_reference_matches_the_op(loss, gate, pull):
    z, y = _case(3, M=2, B=6)
    q = torch.randn(2, 6, 7, 9, dtype=F64, generator=torch.Generator().manual_seed(4))
    spec = EdgeSpec(src=0, dst=1, loss=loss, gate=gate, weight=1.3)
    crops = (3, 5)
    out = ops.attention_crop_loss(q, z, y, [spec], 0.3, crops, pull=pull)
    p = torch.tensor(0.3, dtype=F64)
    w = gate_weight(gate.kind, gate.as_dict(), p, GateSource(z[0], y)) * torch.ones(6, dtype=F64)
    term = LOSSES[loss].reference
    per = []
    for n in range(6):  # crops around the source's first arg-max, with the table's term
        i, j = divmod(int(q[0, n].argmax()), 9)
        terms = []
        for k in crops:
            r0, rh = ref.crop_window(i, k, 7)
            c0, cw = ref.crop_window(j, k, 9)
            u = torch.nn.functional.normalize(q[0, n, r0:r0 + rh, c0:c0 + cw].reshape(-1), dim=0)
            v = torch.nn.functional.normalize(q[1, n, r0:r0 + rh, c0:c0 + cw].reshape(-1), dim=0)
            terms.append(term(u, v, pull == "mean"))
        per.append(torch.stack(terms).mean())
    a = torch.stack(per)
    gated = torch.where(w > 0, w * a, torch.zeros_like(a))
    expected = 0.0 if GATES[gate.kind].skip else 1.3 * gated.sum() / 6
    torch.testing.assert_close(out.edge_loss[0], torch.as_tensor(expected, dtype=F64), rtol=1e-12, atol=1e-12)
    assert int(out.count[0]) == int((w > 0).sum())


# ---------------------------------------------------------------------------
# Mixup forms and the other per-entry facts

@pytest.mark.parametrize("kind", list(LABEL_GATE_FORMS))
def test_mixup_form_is_the_label_edge_weight(kind):
    gate = GATE_CASES[[g.kind for g in GATE_CASES].index(kind)]
    a, b, c = LABEL_GATE_FORMS[kind]
    f, phi = gate.f if kind == "sine" else 0.0, gate.phi if kind == "sine" else 0.0
    for p in (0.0, 0.13, 0.5, 0.77, 1.0):
        pt = torch.tensor(p, dtype=F64)
        form = a + b * p + c * math.sin(2 * math.pi * f * p + phi)
        assert float(gate_weight(kind, gate.as_dict(), pt, None)) == pytest.approx(form, abs=1e-15)


def test_mixup_forms_cover_every_gate_that_computes():
    assert set(LABEL_GATE_FORMS) == {n for n, g in GATES.items() if not g.skip}


def test_train_mixup_forms_equal_the_table():
    # ktgfast.train.mixup_loss keeps its own copy until it imports the table's
    from ktgfast.train.mixup_loss import LABEL_GATE_FORMS as train_forms

    assert dict(train_forms) == dict(LABEL_GATE_FORMS)


def test_entries_are_consistent():
    for g in GATES.values():
        assert not (g.needs_labels and not g.per_sample)
        assert g.schedule is None or (g.schedule in SCHEDULES and not g.per_sample and not g.params)
        for p in g.params:
            assert p.default is None or p.problem(p.default) is None
            assert p.search is None or all(p.problem(x) is None for x in p.search)
    assert [s.code for s in SCHEDULES.values()] == list(range(len(SCHEDULES)))
    assert SCHEDULE_KINDS == {"none": 0, "linear": 1, "neg_linear": 2, "ramp_linear": 3, "ramp_sigmoid": 4}


def test_tpl_lowering_names_a_schedule():
    for kind in ("through", "linear", "neg_linear"):
        loss, gate, tau, mod = lower_edge(Edge("n1", "n1", "tpl", Gate(kind)))
        assert (loss, gate, tau) == ("pl", "threshold", 0.95) and mod in SCHEDULES
        assert mod == GATES[kind].schedule


# ---------------------------------------------------------------------------
# Gate parameters: one shape from YAML to the kernel

def _graph(gate) -> dict:
    return {"nodes": ["a", "b"], "edges": [{"src": "label", "dst": "a", "loss": "ce"},
                                           {"src": "label", "dst": "b", "loss": "ce"},
                                           {"src": "b", "dst": "a", "gate": gate}]}


@pytest.mark.parametrize("gate, expected", [
    ("correct", Gate("correct")),
    ({"kind": "sine", "f": 0.5, "phi": 4.71}, Gate("sine", f=0.5, phi=4.71)),
    ({"kind": "sine", "f": 1, "phi": 0}, Gate("sine", f=1.0, phi=0.0)),
    ({"kind": "threshold", "tau": 0.8}, Gate("threshold", tau=0.8)),
    ({"kind": "threshold"}, Gate("threshold", tau=0.95)),   # FixMatch's default
    ("threshold", Gate("threshold", tau=0.95)),
    ({"kind": "linear"}, Gate("linear")),
])
def test_yaml_gates_parse_into_one_shape(gate, expected):
    g = Graph.from_dict(_graph(gate))
    parsed = g.edges[2].gate
    assert isinstance(parsed, Gate) and parsed == expected and parsed.params == expected.params
    spec = g.edge_specs()[2]
    assert spec.gate is parsed  # the same object in the EdgeSpec
    table = EdgeTable(g.edge_specs(), 2)
    assert table.edge_params[2, 2:].tolist() == list(parsed.pack())
    assert table.edge_index[2, 3].item() == GATE_KINDS[parsed.kind]


@pytest.mark.parametrize("gate, message", [
    ({"kind": "sine", "f": 0.5}, "graph.edges[2].gate.phi: missing; the sine gate needs f and phi"),
    ({"kind": "sine", "phi": 1.0}, "graph.edges[2].gate.f: missing; the sine gate needs f and phi"),
    ("sine", "graph.edges[2].gate.f: missing"),
    ({"kind": "sine", "f": 0.5, "phi": 1.0, "tau": 0.9},
     "graph.edges[2].gate: unknown key 'tau' for the sine gate; allowed: kind, f, phi"),
    ({"kind": "correct", "f": 0.5},
     "graph.edges[2].gate: unknown key 'f' for the correct gate; allowed: kind"),
    ({"kind": "threshold", "tau": "high"}, "graph.edges[2].gate.tau: 'high'; expected a number, got 'high'"),
    ({"kind": "threshold", "tau": True}, "graph.edges[2].gate.tau: True; expected a number"),
    ({"kind": "threshold", "tau": 1.5},
     "graph.edges[2].gate.tau: 1.5; a probability threshold must be in [0, 1]"),
    ({"kind": "sine", "f": ".5", "phi": 1.0}, "graph.edges[2].gate.f: '.5'; expected a number"),
    ({"kind": "sine", "f": float("inf"), "phi": 1.0},
     "graph.edges[2].gate.f: inf; sine gate parameters must be finite"),
    ({"kind": "open"}, "graph.edges[2].gate.kind: unknown gate 'open'; allowed: through, cutoff, linear"),
    ({"kind": 3}, "graph.edges[2].gate.kind: unknown gate 3"),
    (["sine"], "graph.edges[2].gate: expected a gate name or a mapping with kind, got ['sine']"),
])
def test_yaml_gate_errors_are_one_line_with_the_path(gate, message):
    with pytest.raises(ValueError) as err:
        Graph.from_dict(_graph(gate))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_yaml_file_errors_name_the_file(tmp_path):
    from ktgfast.graph import load_graph

    path = tmp_path / "g.yaml"
    path.write_text("nodes: [a]\nedges:\n  - {src: label, dst: a, gate: {kind: sine, f: 0.5}}\n")
    with pytest.raises(ValueError, match=r"^g\.yaml\.edges\[0\]\.gate\.phi: missing"):
        load_graph(path)


def test_python_gates_take_defaults_and_legacy_keywords():
    assert Gate("sine").params == (("f", 0.0), ("phi", 0.0))
    assert Gate("threshold").tau == 0.95 and Gate("threshold", tau=0.5).params == (("tau", 0.5),)
    # f=, phi=, tau= are accepted for every kind and dropped where it has none
    assert Gate("through", f=3.0, tau=0.1) == Gate("through") and Gate("through").params == ()
    assert Gate("linear").tau == 0.95 and Gate("linear").f == 0.0  # read as their defaults
    assert Gate("sine", f=0.5, phi=1.0) == "sine" and hash(Gate("sine")) == hash("sine")
    assert Gate("sine", f=0.5, phi=1.0) != Gate("sine", f=0.5, phi=2.0)
    assert GATE_KINDS[Gate("threshold", tau=0.2)] == GATE_KINDS["threshold"]
    with pytest.raises(AttributeError):
        Gate("sine").kind = "linear"
    with pytest.raises(AttributeError, match="has no parameter 'omega'"):
        Gate("sine").omega  # noqa: B018


def test_python_gate_problems_are_reported_by_validate():
    nodes = [Node("a", "cnn_small"), Node("b", "cnn_small")]

    def graph(gate):
        return Graph(nodes, [Edge("label", "a", "ce"), Edge("b", "a", gate=gate)])

    with pytest.raises(GraphError, match=r"graph\.edges\[1\]\.gate\.freq: 1; the sine gate has no "
                                         r"parameter 'freq'; allowed: f, phi"):
        validate(graph(Gate("sine", freq=1)))
    with pytest.raises(GraphError, match=r"graph\.edges\[1\]\.gate\.tau: -0\.5; a probability threshold"):
        validate(graph(Gate("threshold", tau=-0.5)))
    with pytest.raises(GraphError, match=r"graph\.edges\[1\]\.gate\.phi: 'x'; expected a number"):
        validate(graph(Gate("sine", f=1.0, phi="x")))
    with pytest.raises(ValueError, match=r"edges\[0\]\.freq = 1; the sine gate has no parameter"):
        EdgeTable([EdgeSpec(src=0, dst=1, gate=Gate("sine", freq=1))], 2)
    validate(graph(Gate("sine", f=1.0, phi=2.0)), list_models())


def test_yaml_round_trip_writes_required_parameters(tmp_path):
    from ktgfast.graph import load_graph, save_graph

    nodes = [Node("a", "cnn_small"), Node("b", "cnn_small")]
    g = Graph(nodes, [Edge("label", "a", "ce"), Edge("b", "a", gate=Gate("sine", f=0.5, phi=0.0)),
                      Edge("a", "b", "pl", Gate("threshold"))])
    data = g.to_dict()
    assert data["edges"][1]["gate"] == {"kind": "sine", "f": 0.5, "phi": 0.0}
    assert data["edges"][2]["gate"] == "threshold"
    save_graph(g, tmp_path / "g.yaml")
    back = load_graph(tmp_path / "g.yaml")
    assert back == g and back.edges[1].gate.params == g.edges[1].gate.params


# ---------------------------------------------------------------------------
# EdgeSpec: keyword-only

def test_edge_spec_keywords_and_positional_deprecation():
    e = EdgeSpec(src=0, dst=1, loss="cos", gate="threshold", tau=0.3, weight=2.0)
    assert e.gate == Gate("threshold", tau=0.3) and e.tau == 0.3 and e.coef_schedule == "none"
    with pytest.warns(DeprecationWarning, match="EdgeSpec takes keyword arguments"):
        old = EdgeSpec(0, 1, "cos", "threshold", 1.0, 2.0, True, 0.0, 0.0, 0.3)
    assert old == e
    with pytest.raises(TypeError, match="needs src and dst"):
        EdgeSpec(src=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'gamma'"):
        EdgeSpec(src=0, dst=1, gamma=1.0)
    with pytest.raises(TypeError, match="inside the Gate"):
        EdgeSpec(src=0, dst=1, gate=Gate("sine", f=1.0), phi=2.0)
    import dataclasses

    moved = dataclasses.replace(e, dst=0)
    assert moved.dst == 0 and moved.gate is e.gate


# ---------------------------------------------------------------------------
# Coefficient schedules

PROGRESS = [0.0, 0.1, 0.25, 0.5, 1.0]
L = 0.5
# factor at each progress, by hand: ramp r = min(p / L, 1) = 0, 0.2, 0.5, 1, 1;
# sigmoid exp(-5 (1 - r)^2) = exp(-5), exp(-3.2), exp(-1.25), 1, 1
HAND = {
    "none": [1.0, 1.0, 1.0, 1.0, 1.0],
    "linear": [0.0, 0.1, 0.25, 0.5, 1.0],
    "neg_linear": [1.0, 0.9, 0.75, 0.5, 0.0],
    "ramp_linear": [0.0, 0.2, 0.5, 1.0, 1.0],
    "ramp_sigmoid": [0.006737946999085467, 0.04076220397836621, 0.2865047968601901, 1.0, 1.0],
}


def _schedule(kind: str) -> CoefSchedule:
    return CoefSchedule(kind, length=L) if SCHEDULES[kind].params else CoefSchedule(kind)


def test_hand_values_cover_the_table():
    assert set(HAND) == set(SCHEDULES)


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_schedule_on_the_reference(kind):
    z, y = _case(5)
    plain = [EdgeSpec(src=LABEL, dst=0, loss="ce", weight=2.0), EdgeSpec(src=1, dst=0, gate="correct", T=2.0)]
    sched = [EdgeSpec(src=e.src, dst=e.dst, loss=e.loss, gate=e.gate, T=e.T, weight=e.weight,
                      coef_schedule=_schedule(kind)) for e in plain]
    for p, factor in zip(PROGRESS, HAND[kind]):
        pt = torch.tensor(p, dtype=F64)
        base, out = ref.gated_edge_loss(z, y, plain, pt), ref.gated_edge_loss(z, y, sched, pt)
        torch.testing.assert_close(out.edge_loss, base.edge_loss * factor, rtol=1e-14, atol=0)
        assert torch.equal(out.count, base.count)  # a schedule never closes an edge


@needs_ext
@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_schedule_on_the_fused_op(kind):
    z, y = _case(6)
    plain = [EdgeSpec(src=LABEL, dst=0, loss="ce", weight=2.0), EdgeSpec(src=1, dst=0, gate="correct", T=2.0),
             EdgeSpec(src=0, dst=2, loss="cos", gate="linear")]
    sched = [EdgeSpec(src=e.src, dst=e.dst, loss=e.loss, gate=e.gate, T=e.T, weight=e.weight,
                      coef_schedule=_schedule(kind) if i != 2 else None) for i, e in enumerate(plain)]
    table = EdgeTable(sched, 3)
    assert (table.schedule is None) == (kind == "none")
    for p, factor in zip(PROGRESS, HAND[kind]):
        pt = torch.tensor(p, dtype=F64)
        xb, xs = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        base = ops.gated_edge_loss(xb, y, plain, pt)
        out = ops.gated_edge_loss(xs, y, table, pt)
        want = base.edge_loss.detach() * torch.tensor([factor, factor, 1.0], dtype=F64)
        torch.testing.assert_close(out.edge_loss.detach(), want, rtol=1e-13, atol=0)
        assert torch.equal(out.count, base.count)
        torch.testing.assert_close(out.edge_loss, ref.gated_edge_loss(z, y, sched, pt).edge_loss,
                                   rtol=1e-12, atol=1e-14)
        # the gradient is scaled with it (destination 0 takes only scheduled edges)
        out.node_loss.sum().backward()
        base.node_loss.sum().backward()
        torch.testing.assert_close(xs.grad[0], xb.grad[0] * factor, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(xs.grad[2], xb.grad[2], rtol=0, atol=0)


@needs_ext
@pytest.mark.parametrize("kind", ["linear", "ramp_sigmoid"])
def test_schedule_on_the_attention_op(kind):
    z, y = _case(7, M=2, B=5)
    q = torch.randn(2, 5, 6, 6, dtype=F64, generator=torch.Generator().manual_seed(8))
    plain = [EdgeSpec(src=0, dst=1, loss="pull", weight=1.5), EdgeSpec(src=1, dst=0, loss="push")]
    sched = [EdgeSpec(src=e.src, dst=e.dst, loss=e.loss, weight=e.weight, coef_schedule=_schedule(kind))
             for e in plain]
    table = AttentionEdgeTable(sched, 2)
    for p, factor in zip(PROGRESS, HAND[kind]):
        base = ops.attention_crop_loss(q, z, y, plain, p)
        out = ops.attention_crop_loss(q, z, y, table, p)
        torch.testing.assert_close(out.edge_loss, base.edge_loss * factor, rtol=1e-13, atol=0)
        torch.testing.assert_close(out.edge_loss, ref.attention_crop_loss(
            q, z, y, sched, torch.tensor(p, dtype=F64)).edge_loss, rtol=1e-12, atol=1e-14)


def test_schedule_clamps_progress_and_tables_without_one_cost_nothing():
    spec = EdgeSpec(src=0, dst=1, coef_schedule={"kind": "ramp_linear", "length": 0.5})
    table = EdgeTable([spec, EdgeSpec(src=1, dst=0)], 2)
    for p, want in ((-0.5, 0.0), (1.7, 1.0)):
        cols = table.params_at(torch.tensor(p, dtype=F64))
        assert cols[:, 1].tolist() == [want, 1.0] and torch.equal(cols[:, [0, 2, 3]],
                                                                  table.edge_params[:, [0, 2, 3]])
    moved = table.to("cpu")
    assert moved.schedule is not None and torch.equal(moved.schedule[0], table.schedule[0])
    plain = EdgeTable([EdgeSpec(src=0, dst=1)], 2)
    assert plain.schedule is None and plain.params_at(torch.tensor(0.3, dtype=F64)) is plain.edge_params


@pytest.mark.parametrize("schedule, message", [
    ("ramp_linear", r"edges\[0\]\.coef_schedule\.length: missing; the ramp_linear coefficient "
                    r"schedule needs length"),
    ({"kind": "ramp_sigmoid", "length": 0.0}, r"edges\[0\]\.coef_schedule\.length = 0\.0; a ramp "
                                              r"length is a fraction of training, in \(0, 1\]"),
    ({"kind": "ramp_sigmoid", "length": 1.5}, r"length = 1\.5"),
    ({"kind": "linear", "length": 0.5}, r"coef_schedule\.length = 0\.5; the linear coefficient "
                                        r"schedule has no parameter 'length'"),
    ("cosine", r"edges\[0\]\.coef_schedule: unknown coefficient schedule 'cosine'; allowed: none, "
               r"linear, neg_linear, ramp_linear, ramp_sigmoid"),
])
def test_schedule_errors_name_the_field(schedule, message):
    with pytest.raises(ValueError, match=message):
        EdgeTable([EdgeSpec(src=0, dst=1, coef_schedule=schedule)], 2)


@needs_ext
@pytest.mark.slow  # torch.compile: seconds of Dynamo/Inductor per case
@pytest.mark.parametrize("prebuilt_table", [True, False], ids=["table", "specs"])
def test_schedule_under_torch_compile(prebuilt_table):
    torch._dynamo.reset()
    z, y = _case(9)
    z = z.float()
    specs = [EdgeSpec(src=LABEL, dst=0, loss="ce", coef_schedule={"kind": "ramp_sigmoid", "length": 0.4}),
             EdgeSpec(src=1, dst=0, gate="sine", f=0.5, phi=1.0, coef_schedule="neg_linear"),
             EdgeSpec(src=0, dst=2, loss="pl", gate="threshold", tau=0.3)]
    edges = EdgeTable(specs, 3) if prebuilt_table else specs

    def f(x, progress):
        out = ops.gated_edge_loss(x, y, edges, progress)
        return out.node_loss.sum(), out.edge_loss

    cf = torch.compile(f, fullgraph=True)
    for p in (0.1, 0.6):
        prog = torch.tensor(p, dtype=F64)
        xe, xc = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        eager, comp = f(xe, prog), cf(xc, prog)
        eager[0].backward()
        comp[0].backward()
        torch.testing.assert_close(comp[1], eager[1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Every preset and search space still builds

@pytest.mark.parametrize("name", sorted(builtin_spaces()))
def test_every_search_space_samples_valid_graphs(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    for _ in range(8):
        trial = study.ask()
        graph = space.sample(trial, "synthetic")
        try:
            validate(graph, list_models())
        except GraphError as exc:  # a sampled target that never learns is scored as failed
            assert "never learns" in str(exc)
            continue
        assert Graph.from_dict(graph.to_dict()) == graph
        EdgeTable(graph.edge_specs() if not graph.semi_supervised else [], len(graph.nodes))


# ---------------------------------------------------------------------------
# Imports: no cycles within ktgfast.edges and ktgfast.graph, none hidden

PACKAGES = ("ktgfast.edges", "ktgfast.graph")


def _module_imports():
    """module -> (ktgfast modules it imports, imports inside functions)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg.replace(".", "/")).glob("*.py")):
            mod = f"{pkg}.{path.stem}" if path.stem != "__init__" else pkg
            base = mod if path.stem == "__init__" else mod.rsplit(".", 1)[0]
            tree = ast.parse(path.read_text())
            deps, local = set(), []
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        parts = base.split(".")
                        keep = parts[:len(parts) - node.level + 1]
                        target = ".".join(keep + ([node.module] if node.module else []))
                    else:
                        target = node.module or ""
                    names = [target] + [f"{target}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                names = [n for n in names if n.startswith("ktgfast")]
                deps.update(names)
            for fn in ast.walk(tree):
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for node in ast.walk(fn):
                        ours = (isinstance(node, ast.ImportFrom) and (
                            node.level or (node.module or "").startswith("ktgfast"))) or (
                            isinstance(node, ast.Import) and any(a.name.startswith("ktgfast")
                                                                 for a in node.names))
                        if ours:
                            local.append(f"{mod}.{fn.name}")
            out[mod] = (deps, local)
    return out


def test_no_import_cycles_and_no_local_imports():
    imports = _module_imports()
    mods = set(imports)
    graph = {m: {d for d in deps if d in mods and d != m} for m, (deps, _) in imports.items()}
    for m, (_, local) in imports.items():
        assert not local, f"{m}: function-local imports of ktgfast modules in {local}"
    # ktgfast.edges knows nothing of graphs
    assert not any(d.startswith("ktgfast.graph") for m, (deps, _) in imports.items()
                   if m.startswith("ktgfast.edges") for d in deps)
    # depth-first search for a cycle (a package stands for its __init__)
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, f"import cycle: {' -> '.join(path + [d])}"
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert len(state) == len(graph) > 10
