"""Graphs: presets, validation messages, canonical form, YAML, pictures, CLI."""
import math

import pytest

from ktgfast.cli import main as cli
from ktgfast.graph import (Edge, Gate, Graph, GraphError, Node, get_preset, list_presets,
                           load_graph, render, resolve_graph, save_graph, summary, to_dot, validate)
from ktgfast.models import list_models


def two_nodes(edges, **kw):
    return Graph([Node("a", "cnn_small"), Node("b", "cnn_small")], edges, **kw)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_validates_and_summarises(name):
    g = validate(get_preset(name), list_models())
    assert g.name == name
    assert g.target_name in summary(g)


def test_dml_peer_weighting_mean_and_sum():
    mean = get_preset("dml", k=4)
    summed = get_preset("dml", k=4, peer="sum")
    kl = lambda g: [e for e in g.edges if e.loss == "kl"]
    assert len(kl(mean)) == 12 and all(math.isclose(e.weight, 1 / 3) for e in kl(mean))
    assert all(e.weight == 1.0 for e in kl(summed))
    assert mean != summed


def test_kd_is_hinton():
    g = get_preset("kd", T=2.0, alpha=0.7)
    assert g.node("teacher").frozen and not g.learns("teacher")
    ce = next(e for e in g.edges if e.src == "label")
    kl = next(e for e in g.edges if e.src == "teacher")
    assert math.isclose(ce.weight, 0.3) and kl.weight == 0.7 and kl.T == 2.0 and kl.t2


def test_found_graph_has_correct_gate_on_r32_to_wrn():
    g = get_preset("ktg-found-2node")
    gates = {(e.src, e.dst): e.gate.kind for e in g.edges}
    assert gates[("r32", "wrn")] == "correct"
    assert {k: v for k, v in gates.items() if k != ("r32", "wrn")} == {
        ("label", "r32"): "through", ("label", "wrn"): "through", ("wrn", "r32"): "through"}


def test_canonical_form_equal_graphs_compare_and_hash_equal():
    e1 = [Edge("label", "a", "ce"), Edge("label", "b", "ce"), Edge("a", "b"), Edge("b", "a")]
    e2 = [Edge("b", "a"), Edge("label", "b", "kl"), Edge("a", "b"), Edge("label", "a", "ce"),
          Edge("a", "b", gate=Gate("cutoff"))]  # reordered, label kl == ce, plus a cutoff edge
    g1, g2 = two_nodes(e1), two_nodes(e2)
    assert g1 == g2 and hash(g1) == hash(g2) and g1.digest() == g2.digest()
    g3 = two_nodes(e1[:3] + [Edge("b", "a", gate=Gate("correct"))])
    assert g3 != g1
    # parameters a gate ignores do not matter; those it uses do
    assert two_nodes([Edge("label", "a", "ce", gate=Gate("through", f=3.0))]) == \
        two_nodes([Edge("label", "a", "ce")])
    s1 = two_nodes([Edge("label", "a", "ce"), Edge("b", "a", gate=Gate("sine", f=0.5, phi=1.0))])
    s2 = two_nodes([Edge("label", "a", "ce"), Edge("b", "a", gate=Gate("sine", f=0.5, phi=1.0 + 2 * math.pi))])
    s3 = two_nodes([Edge("label", "a", "ce"), Edge("b", "a", gate=Gate("sine", f=0.25, phi=1.0))])
    assert s1 == s2 and s1 != s3


def test_yaml_round_trip(tmp_path):
    for name in list_presets():
        g = get_preset(name)
        save_graph(g, tmp_path / f"{name}.yaml")
        back = load_graph(tmp_path / f"{name}.yaml")
        assert back == g and back.name == g.name and back.nodes == g.nodes
    sine = two_nodes([Edge("label", "a", "ce"), Edge("b", "a", "cos", Gate("sine", f=0.5, phi=4.0), T=2.0)])
    save_graph(sine, tmp_path / "s.yaml")
    assert load_graph(tmp_path / "s.yaml") == sine
    assert resolve_graph(str(tmp_path / "s.yaml")) == sine


@pytest.mark.parametrize("graph, message", [
    (Graph([], []), "at least one model node"),
    (two_nodes([Edge("label", "a", "ce"), Edge("c", "a")]), "graph.edges[1].src: 'c' is not a node; allowed: label, a, b"),
    (two_nodes([Edge("label", "a", "ce"), Edge("a", "z")]), "graph.edges[1].dst: 'z' is not a node"),
    (two_nodes([Edge("label", "a", "ce", gate=Gate("open"))]), "unknown gate 'open'; allowed: through, cutoff"),
    (two_nodes([Edge("label", "a", "ce"), Edge("b", "a", "mse")]), "unknown loss 'mse'; allowed: kl, ce, cos, pl"),
    (two_nodes([Edge("label", "a", "ce"), Edge("b", "a", T=0.0)]), "graph.edges[1].T: 0.0"),
    (two_nodes([Edge("label", "b", "ce")], target="a"), "target node 'a' never learns"),
    (two_nodes([Edge("label", "a", "ce", gate=Gate("cutoff"))]), "target node 'a' never learns"),
    (Graph([Node("a", "resnet33")], [Edge("label", "a", "ce")]), "graph.nodes[0].model: unknown model 'resnet33'"),
    (Graph([Node("a", "cnn_small"), Node("a", "cnn_small")], []), "duplicate node name 'a'"),
    (two_nodes([Edge("label", "a", "ce")], target="q"), "graph.target: 'q' is not a node"),
    (Graph([Node("a", "cnn_small", frozen=True)], [Edge("label", "a", "ce")]), "edge into frozen node 'a'"),
    (two_nodes([Edge("label", "a", "cos")]), "'cos' cannot come from the label"),
])
def test_validation_errors_name_the_field(graph, message):
    with pytest.raises(GraphError) as err:
        validate(graph, list_models())
    assert message in str(err.value)


@pytest.mark.parametrize("data, message", [
    ({"nodes": [{"name": "a"}], "edges": [], "targett": "a"}, "unknown key 'targett'; allowed: nodes, edges, target"),
    ({"nodes": [{"name": "a", "modle": "x"}]}, "g.nodes[0]: unknown key 'modle'"),
    ({"nodes": [{"name": "a"}], "edges": [{"src": "label"}]}, "g.edges[0].dst: missing"),
    ({"nodes": [{"name": "a"}], "edges": [{"src": "label", "dst": "a", "gate": {"kind": "sine", "freq": 1}}]},
     "g.edges[0].gate: unknown key 'freq'"),
    ({"nodes": [{"name": "a"}], "edges": [{"src": "label", "dst": "a", "T": "hot"}]}, "g.edges[0].T: expected a number"),
    ({"nodes": "a"}, "g.nodes: expected a list"),
])
def test_yaml_errors_name_the_path(data, message):
    with pytest.raises(ValueError) as err:
        Graph.from_dict(data, where="g")
    assert message in str(err.value)


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown graph preset 'dlm'; allowed: ban, dml"):
        get_preset("dlm")
    with pytest.raises(ValueError, match="preset 'dml' has no parameter 'kk'; allowed: k, model"):
        get_preset("dml", kk=3)
    with pytest.raises(ValueError, match="neither a graph preset nor a YAML file"):
        resolve_graph("no-such-graph")


def test_edge_specs_map_names_to_slots():
    g = get_preset("ktg-found-2node")
    specs = g.edge_specs()
    assert [(s.src, s.dst, s.gate) for s in specs] == [
        ("label", 0, "through"), ("label", 1, "through"), (1, 0, "through"), (0, 1, "correct")]


def test_render_dot_and_png(tmp_path):
    g = get_preset("ktg-found-2node")
    dot = to_dot(g)
    assert '"r32" -> "wrn"' in dot and "kl · correct" in dot and '"label"' in dot
    png = render(g, tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert render(g, tmp_path / "g.dot").read_text() == dot


def test_cli_graph_show_render_and_errors(tmp_path, capsys):
    assert cli(["graph", "show", "dml", "--graph-arg", "k=3"]) == 0
    assert "3 nodes, 9 active edges" in capsys.readouterr().out
    out = tmp_path / "kd.png"
    assert cli(["graph", "render", "kd", "-o", str(out)]) == 0 and out.exists()
    assert cli(["graph", "show", "nope"]) == 2
    assert "neither a graph preset nor a YAML file" in capsys.readouterr().err


# Graph.digest() values computed before gates became table entries (gates with
# flat f/phi/tau fields); search studies and checkpoints key on them.
# dml, ens-dml, ens-push-pull-3node, mean-teacher and pi-model changed digest
# when they gained a default ramp-up of their node edges (docs/rampup.md): a
# ramped graph computes something else.  Without the ramp they keep their old
# digests (RAMPED_BEFORE, checked below with rampup="none").
PINNED_DIGESTS = {
    "ban": "3e412889a8c4", "dml": "8c0bfdc2c36c", "ens-dml": "0f894eac9511",
    "ens-independent": "6c0769dbefbb", "ens-ktg-found-3node": "08d885d94d0c",
    "ens-push-pull-3node": "29c6b5011386", "fixmatch": "15e2a093cadd", "kd": "3d212c6fa3e3",
    "ktg-found-2node": "91dadff1aef9", "mean-teacher": "c9fe2243845f", "pi-model": "7448df5c0771",
    "pseudo-label": "e793103ab4b9", "ssl-supervised": "ba4b0bf9bd80", "ta": "12d7cd33b497",
    "vanilla": "7b12f1600794",
}
# The digests of the ramped presets before the ramp-up existed.
RAMPED_BEFORE = {"dml": "70b0c261d944", "ens-dml": "a833b11323e1", "ens-push-pull-3node": "8363f06be5cd",
                 "mean-teacher": "87b82b7684e1", "pi-model": "5d23609e16ab"}


@pytest.mark.parametrize("name", sorted(RAMPED_BEFORE))
def test_presets_without_their_ramp_keep_their_old_digests(name):
    assert get_preset(name, rampup="none").digest() == RAMPED_BEFORE[name]


@pytest.mark.parametrize("name", sorted(PINNED_DIGESTS))
def test_preset_digests_are_pinned(name):
    assert get_preset(name).digest() == PINNED_DIGESTS[name]


def test_gate_parameter_digests_are_pinned():
    def g(edge):
        return two_nodes([Edge("label", "a", "ce"), edge])

    assert g(Edge("b", "a", "cos", Gate("sine", f=0.5, phi=4.0), T=2.0)).digest() == "1188e648226b"
    assert g(Edge("b", "a", "kl", Gate("sine", f=0.25, phi=0.0))).digest() == "741c16bcec85"
    assert g(Edge("b", "a", "kl", Gate("sine", f=0.25, phi=1.0 + 2 * math.pi))).digest() == "aad265914606"
    assert g(Edge("b", "a", "pl", Gate("threshold", tau=0.7))).digest() == "a2e32537f170"
    assert g(Edge("b", "a", "pl", Gate("threshold"))).digest() == "fe52c14b7d9d"
    assert get_preset("fixmatch", tau=0.8).digest() == "a3620c8522bb"
    ssl = Graph([Node("n1", "cnn_small"), Node("n2", "cnn_small")],
                [Edge("label", "n1", "ce"),
                 Edge("n1", "n1", "tpl", Gate("linear"), src_view="weak", dst_view="strong"),
                 Edge("n2", "n1", "tpl", Gate("threshold", tau=0.99)),
                 Edge("label", "n2", "ce", Gate("neg_linear"))], "n1", semi_supervised=True)
    assert ssl.digest() == "afb69d6066f4"
    # the key's gate form: only parameters that differ from their defaults
    assert '"gate":{"f":0.25,"kind":"sine"}' in g(Edge("b", "a", "kl", Gate("sine", f=0.25))).key()


def test_graph_list_shows_each_preset_with_a_description_and_its_parameters(capsys):
    import inspect

    from ktgfast.cli import main as ktgfast_main
    from ktgfast.graph.presets import PRESETS, describe_preset

    assert ktgfast_main(["graph", "list"]) == 0
    out = capsys.readouterr().out
    for name, fn in PRESETS.items():
        text, params = describe_preset(name)
        assert text and "``" not in text and len(text) <= 101
        assert params == list(inspect.signature(fn).parameters)
        assert f"{name:<20} {text}" in out
    assert "parameters (--graph-arg KEY=VALUE): k, model, models, peer" in out
