"""Pictures that read: graph layouts (every preset, random search-space graphs),
the search's learning curves and the analysis heat maps.  Geometry is checked
on the drawn figure, with the text boxes matplotlib's renderer measures."""
from __future__ import annotations

import math

import optuna
import pytest
import torch
import yaml

from ktgfast.analysis.plots import conflicts_figure, pairs_figure
from ktgfast.edges import LABEL
from ktgfast.graph import get_preset, list_presets
from ktgfast.graph.layout import Anchor, label_centre, layout
from ktgfast.graph.render import draw
from ktgfast.search.report import curves_figure
from ktgfast.search.space import SearchSpace, builtin_spaces

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACES = ("ktg-4gates-2nodes", "ktg-sine-3nodes", "ens-2nodes", "ssl-diverse-2nodes")


def _random_graph(space: str, nodes: int, seed: int):
    data = yaml.safe_load(builtin_spaces()[space].read_text())
    data["nodes"] = nodes
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return SearchSpace.from_dict(data).sample(study.ask(), "default")


def _inside(inner, outer, tol=0.5) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol
            and inner.x1 <= outer.x1 + tol and inner.y1 <= outer.y1 + tol)


def _check_picture(graph):
    """Draw ``graph`` and check its geometry; the picture and renderer back."""
    pic = draw(graph)
    fig, lay = pic.fig, pic.layout
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    canvas = fig.bbox
    # nodes: apart (their boxes do not touch) and inside the canvas
    names = list(lay.pos)
    assert set(names) == {LABEL, *graph.node_names()}
    boxes = {n: p.get_window_extent(renderer) for n, p in pic.nodes.items()}
    for i, a in enumerate(names):
        assert _inside(boxes[a], canvas), f"node {a} outside the canvas"
        for b in names[i + 1:]:
            assert math.dist(lay.pos[a], lay.pos[b]) >= 1.0, (a, b, lay.pos)
            assert not boxes[a].overlaps(boxes[b]), f"nodes {a} and {b} overlap"
    # every text (node names, edge labels, title, footnote) inside the canvas
    for t in ax.texts:
        assert _inside(t.get_window_extent(renderer), canvas), f"{t.get_text()!r} outside the canvas"
    # every non-member link is labelled; no label covers its own curve, each sits next to it
    drawn = [link for link in lay.links if link.kind != "member"]
    assert [link for link, _ in pic.labels] == drawn
    for link, t in pic.labels:
        ext = t.get_window_extent(renderer)
        pts = ax.transData.transform(lay.curve(link, 200))
        on = [(x, y) for x, y in pts if ext.x0 <= x <= ext.x1 and ext.y0 <= y <= ext.y1]
        assert not on, f"label {t.get_text()!r} of {link.src}->{link.dst} sits on its line"
        cx, cy = (ext.x0 + ext.x1) / 2, (ext.y0 + ext.y1) / 2
        near = min(math.dist((cx, cy), p) for p in pts) - max(ext.width, ext.height) / 2
        assert near < 0.3 * fig.dpi, f"label {t.get_text()!r} is {near:.0f} px from its line"
    # labels do not cover nodes
    for link, t in pic.labels:
        ext = t.get_window_extent(renderer)
        for n, b in boxes.items():
            assert not ext.overlaps(b), f"label {t.get_text()!r} covers node {n}"
    return pic, renderer


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_reads(name):
    pic, r = _check_picture(get_preset(name))
    ext = [t.get_window_extent(r) for _, t in pic.labels]
    clashes = [(i, j) for i in range(len(ext)) for j in range(i + 1, len(ext)) if ext[i].overlaps(ext[j])]
    assert not clashes, f"{name}: overlapping edge labels {clashes}"


def test_two_node_graphs_have_two_places():
    """The bug this file began with: both model nodes of a 2-node graph at one spot."""
    lay = layout(get_preset("ktg-found-2node"))
    (x1, y1), (x2, y2), (xl, yl) = lay.pos["r32"], lay.pos["wrn"], lay.pos[LABEL]
    assert math.dist((x1, y1), (x2, y2)) > 2.0
    assert yl > max(y1, y2) and xl == 0.0  # ŷ above, as in the thesis's figures
    pair = [link for link in lay.links if {link.src, link.dst} == {"r32", "wrn"}]
    assert len(pair) == 2 and pair[0].rad * pair[1].rad > 0  # same sign: opposite sides
    a, b = (lay.curve(p, 3)[1] for p in pair)  # the middles of the two arcs
    assert math.dist(a, b) > 0.3, "the two directions of a pair are drawn apart"


@pytest.mark.parametrize("k", range(1, 9))
def test_layout_any_node_count_is_deterministic_and_apart(k):
    graph = get_preset("dml", k=k) if k > 1 else get_preset("vanilla")
    a, b = layout(graph), layout(graph)
    assert a == b
    pts = list(a.pos.values())
    assert len(pts) == k + 1
    assert min(math.dist(p, q) for i, p in enumerate(pts) for q in pts[i + 1:]) > 2.0
    assert a.pos[LABEL] == (0.0, max(y for _, y in pts))


@pytest.mark.slow
@pytest.mark.parametrize("space", SPACES)
def test_random_search_graphs_read(space):
    for nodes in range(2, 7):
        _check_picture(_random_graph(space, nodes, seed=nodes))


def test_label_centre_clears_the_line():
    """A label beside a slanted straight line: its box is clear of the line."""
    a = Anchor(0.0, 0.0, math.sin(0.3), math.cos(0.3))  # normal of a line tilted 0.3 rad
    w, h = 1.4, 0.15
    cx, cy = label_centre(a, w, h)
    tx, ty = a.ny, -a.nx  # along the line
    corners = [(cx + sx * w / 2, cy + sy * h / 2) for sx in (-1, 1) for sy in (-1, 1)]
    assert min((x - a.x) * a.nx + (y - a.y) * a.ny for x, y in corners) >= 0.05
    assert abs((cx - a.x) * tx + (cy - a.y) * ty) < 1e-9


def _study(epochs_of: list[int], prune: list[bool]) -> optuna.Study:
    study = optuna.create_study(study_name="curves", direction="maximize")
    for i, (n, pruned) in enumerate(zip(epochs_of, prune)):
        t = study.ask()
        for e in range(1, n + 1):
            t.report(40.0 + i + e, e)
        study.tell(t, state=optuna.trial.TrialState.PRUNED) if pruned else study.tell(t, 40.0 + i + n)
    return study


def _marked(ax):
    return [ln for ln in ax.lines if len(ln.get_xdata()) == 1 and ln.get_marker() not in (None, "None", "")]


def test_curves_of_one_epoch_trials_are_markers():
    fig = curves_figure(_study([1, 1, 1, 1], [False, True, False, True]))
    fig.canvas.draw()
    ax = fig.axes[0]
    marked = _marked(ax)
    # 4 trials + the best again + 2 pruned crosses, each a visible point at epoch 1
    assert len(marked) == 7 and all(ln.get_xdata()[0] == 1 for ln in marked)
    lo, hi = ax.get_xlim()
    assert lo < 1 < hi
    assert all(ax.get_ylim()[0] <= ln.get_ydata()[0] <= ax.get_ylim()[1] for ln in marked)


def test_curves_of_longer_trials_are_lines():
    fig = curves_figure(_study([4, 2, 1], [False, True, True]))
    ax = fig.axes[0]
    lengths = sorted(len(ln.get_xdata()) for ln in ax.lines if ln.get_linestyle() != "None")
    assert 4 in lengths and 2 in lengths
    assert len(_marked(ax)) >= 1  # the 1-epoch trial


def test_heat_maps_have_colour_bars():
    names = ["a", "b", "c"]
    pairs = [{"node_a": x, "node_b": y, "mutual_kl": 0.1 * i, "delta_accuracy": 1.0 + i}
             for i, (x, y) in enumerate([("a", "b"), ("a", "c"), ("b", "c")])]
    fig = pairs_figure(names, pairs)
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 2 and all(im.colorbar is not None for im in images)
    assert len(fig.axes) == 4  # two maps, two colour bars
    blocks = {"prob": (["t1", "t2"], torch.tensor([[0, 3], [3, 0]])),
              "att": (["t1", "t2"], torch.tensor([[0, 0], [0, 0]]))}
    fig = conflicts_figure(blocks)
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 2 and all(im.colorbar is not None for im in images)
