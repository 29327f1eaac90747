"""Text summaries and pictures of graphs, in the spirit of the thesis's figures:
models as boxes, the label as its own node, edges labelled by loss and gate.
Pictures: graphviz's ``dot`` when installed, else matplotlib drawing the
geometry of ``layout.py``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..edges import GATE_COLORS, LABEL
from .layout import label_centre, layout
from .spec import Edge, Graph
from .ssl import dst_view, src_view


def summary(graph: Graph, models: dict[str, str] | None = None) -> str:
    """The graph as text.  ``models``: what each node's model resolved to
    (``auto`` -> the dataset's default), shown beside the name written."""
    models = models or {}
    lines = [f"graph {graph.name or '(unnamed)'}: {len(graph.nodes)} nodes, "
             f"{len(graph.active_edges())} active edges, target {graph.target_name}, "
             f"reduction {graph.reduction}, id {graph.digest()}"
             + (", semi-supervised (node edges on unlabelled data)" if graph.semi_supervised else "")]
    if graph.ramp_of(Edge("a", "b")) is not None:
        lines.append(f"rampup: node edges weighted by a {graph.rampup.describe()} (label edges never)")
    w = max(len(n.name) for n in graph.nodes)
    lines.append("nodes:")
    for n in graph.nodes:
        state = "frozen" if not graph.learns(n.name) else "learns"
        if n.is_ensemble:
            state = "mean of " + ", ".join(graph.members(n.name))
        if n.ema_of is not None:
            state = f"EMA of {n.ema_of}"
        extra = f" weights={n.weights}" if n.weights else ""
        opts = f" {n.options}" if n.options else ""
        model = n.model if models.get(n.name, n.model) == n.model else f"{models[n.name]} ({n.model})"
        lines.append(f"  {n.name:<{w}}  {model}{opts}  [{state}]{extra}")
    lines.append("edges (src -> dst  loss  gate  T  weight):")
    ws = max([len(LABEL)] + [len(e.src) for e in graph.edges]) if graph.edges else 5
    for e in graph.edges:
        lines.append(f"  {e.src:>{ws}} -> {e.dst:<{w}}  {e.loss:<3}  {str(e.gate):<24}  "
                     f"T={e.T:g}  w={e.weight:g}{'' if e.t2 or e.loss != 'kl' else '  (no T²)'}"
                     + _views(graph, e, "  views {}") + _ramp(graph, e))
    return "\n".join(lines)


def _ramp(graph: Graph, e) -> str:
    """An edge's own ramp-up where it differs from the graph's; else ''."""
    if e.rampup is None or e.src == LABEL:
        return ""
    ramp = graph.ramp_of(e)
    return f"  {ramp.describe()}" if ramp is not None else "  no ramp-up"


def _views(graph: Graph, e, fmt: str) -> str:
    """``src view -> dst view`` of an unlabelled edge, formatted; else ''."""
    if not graph.semi_supervised or e.src == LABEL:
        return ""
    return fmt.format(f"{src_view(e)}->{dst_view(e)}")


def edge_label(e, graph: Graph | None = None) -> str:
    text = f"{e.loss} · {e.gate}"
    if graph is not None:
        text += _views(graph, e, " · {}")
    if e.T != 1:
        text += f" · T={e.T:g}"
    if e.weight != 1:
        text += f" · ×{e.weight:.3g}"
    return text


def to_dot(graph: Graph) -> str:
    out = [f'digraph "{graph.name or "ktg"}" {{', "  rankdir=LR;", '  node [fontname="Helvetica"];',
           '  edge [fontname="Helvetica", fontsize=10];',
           f'  "{LABEL}" [shape=ellipse, label="ŷ (label)"];']
    for n in graph.nodes:
        style = ', style=filled, fillcolor="gray85"' if not graph.learns(n.name) else ""
        if n.is_ensemble:  # red, as in the thesis's figures
            style = ', style=filled, fillcolor="#f4b6b6"'
        pen = ", penwidth=2.5" if n.name == graph.target_name else ""
        out.append(f'  "{n.name}" [shape=box, label="{n.name}\\n{n.model}"{style}{pen}];')
    for n in graph.nodes:
        out += [f'  "{m}" -> "{n.name}" [style=dotted, arrowhead=none];' for m in graph.members(n.name)]
        if n.ema_of is not None:  # the EMA "edge" of the thesis (eq. 5.2)
            out.append(f'  "{n.ema_of}" -> "{n.name}" [label="EMA", style=dashed, color="teal", '
                       'fontcolor="teal"];')
    for e in graph.edges:
        color = GATE_COLORS.get(e.gate.kind, "black")
        dash = ", style=dashed" if e.gate.kind == "cutoff" else ""
        out.append(f'  "{e.src}" -> "{e.dst}" [label="{edge_label(e, graph)}", color="{color}", '
                   f'fontcolor="{color}"{dash}];')
    out.append("}")
    return "\n".join(out) + "\n"


def render(graph: Graph, path: str | Path) -> Path:
    """Write a picture: ``.dot`` text (for graphviz), or ``.png``/``.svg`` drawn
    with matplotlib from :func:`ktgfast.graph.layout` -- always the same
    tested layout, whether or not graphviz is installed."""
    path = Path(path)
    if path.suffix == ".dot":
        path.write_text(to_dot(graph))
        return path
    return _render_matplotlib(graph, path)


def _render_matplotlib(graph: Graph, path: Path) -> Path:
    fig = figure(graph)
    fig.savefig(path, dpi=fig.dpi)
    return path


# ---------------------------------------------------------------------------
# matplotlib drawing of a layout (layout.py); 1 data unit = 1 inch throughout

DPI = 120
NODE_FONT, EDGE_FONT, LABEL_FONT = 9.0, 8.0, 14.0
NODE_PAD = 0.09        # inches between a node's text and its box
MARGIN = 0.15          # inches of white around everything
MPL_COLORS = {"gray70": "#b3b3b3"}  # graphviz names matplotlib lacks
LINK_STYLE = {         # kind -> colour (None: the gate's), line style, arrow
    "edge": (None, "-", "-|>"), "ema": ("teal", "--", "-|>"), "member": ("#c04040", ":", "-"),
}


def _node_fill(graph: Graph, name: str) -> str:
    if graph.node(name).is_ensemble:
        return "#f4b6b6"  # red, as in the thesis's figures
    return "#cfe3ff" if graph.learns(name) else "#dddddd"  # frozen: grey


def _node_text(graph: Graph, n) -> str:
    """Name over model; an ensemble's members, an EMA node's source."""
    if n.is_ensemble:
        members = graph.members(n.name)
        what = "mean of " + ", ".join(members)
        return f"{n.name}\n{what if len(what) <= 20 else f'mean of {len(members)} models'}"
    return f"{n.name}\n{f'EMA of {n.ema_of}' if n.ema_of is not None else n.model}"


def _wrap(text: str, width: int = 22) -> str:
    """A long ``a · b · c · d`` label on two lines."""
    parts = text.split(" · ")
    if len(text) <= width or len(parts) < 3:
        return text
    return " · ".join(parts[:2]) + "\n" + " · ".join(parts[2:])


def _compact(text: str) -> str:
    """Gate parameters to 2 significant digits, ``phi`` as φ: a picture's label."""
    text = re.sub(r"\d+\.\d{3,}", lambda m: f"{float(m.group()):.2g}", text)
    return text.replace("phi=", "φ=")


def _link_text(graph: Graph, link) -> str:
    return "EMA" if link.kind == "ema" else _wrap(_compact(edge_label(graph.edges[link.index], graph)))


def _link_color(graph: Graph, link) -> str:
    color = LINK_STYLE[link.kind][0]
    if color is None:
        color = GATE_COLORS.get(graph.edges[link.index].gate.kind, "black")
    return MPL_COLORS.get(color, color)


def _size_inches(text, renderer) -> tuple[float, float]:
    ext = text.get_window_extent(renderer)
    return ext.width / DPI, ext.height / DPI


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _box(cx, cy, w, h, pad=0.0):
    return (cx - w / 2 - pad, cy - h / 2 - pad, cx + w / 2 + pad, cy + h / 2 + pad)


def _place_label(anchors, w, h, taken, curves, own, fine) -> tuple[float, float]:
    """The first anchor whose box overlaps no node or placed label and crosses
    the fewest other curves (the label's white box would hide them)."""
    best = None
    for k, a in enumerate(anchors):
        cx, cy = label_centre(a, w, h, fine)
        box = _box(cx, cy, w, h, 0.03)
        covered = sum(_overlap(box, t) for t in taken)
        hit = ((curves[..., 0] >= box[0]) & (curves[..., 0] <= box[2]) & (curves[..., 1] >= box[1])
               & (curves[..., 1] <= box[3])).any(axis=1)
        crossed = int(hit.sum() - hit[own])
        key = (round(covered, 4), crossed, k)
        if best is None or key < best[0]:
            best = (key, (cx, cy))
    return best[1]


@dataclass
class Picture:
    """A drawn graph: the Figure, its layout, each node's patch and each
    labelled link's text (in ``layout.links`` order)."""

    fig: object
    layout: object
    nodes: dict
    labels: list


def figure(graph: Graph):
    """The graph as a matplotlib Figure (see ``draw``)."""
    return draw(graph).fig


def draw(graph: Graph) -> Picture:
    """The graph drawn: ŷ and the models on one polygon (layout.py), every
    drawn edge labelled with its loss and gate beside its line, cut-off edges
    listed below.  Sized to its content, nothing clipped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as MPath

    fig = Figure(figsize=(6, 6), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    common = dict(ha="center", va="center", clip_on=False)
    texts = {n.name: ax.text(0, 0, _node_text(graph, n), fontsize=NODE_FONT, zorder=4, **common)
             for n in graph.nodes}
    texts[LABEL] = ax.text(0, 0, "ŷ", fontsize=LABEL_FONT, zorder=4, **common)
    size = {}
    for name, t in texts.items():
        w, h = _size_inches(t, renderer)
        size[name] = (w + 2 * NODE_PAD, h + 2 * NODE_PAD)
    size[LABEL] = (max(size[LABEL]) * 1.25,) * 2  # a circle
    lay = layout(graph, size)
    for name, t in texts.items():
        t.set_position(lay.pos[name])
    xs, ys = zip(*lay.pos.values())
    _set(fig, ax, min(xs) - 3, max(xs) + 3, min(ys) - 3, max(ys) + 3)  # provisional

    patches = {}
    for name, (x, y) in lay.pos.items():
        w, h = lay.size[name]
        if name == LABEL:
            p = Ellipse((x, y), w, h, fc="#fff2c6", ec="black", lw=1.0)
        else:
            target = name == graph.target_name
            p = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                               fc=_node_fill(graph, name), ec="black", lw=2.4 if target else 1.0)
        p.set_zorder(3)
        p.set_clip_on(False)
        patches[name] = ax.add_patch(p)

    curves = np.array([lay.curve(link) for link in lay.links]).reshape(len(lay.links), -1, 2)
    for link in lay.links:
        color = _link_color(graph, link)
        _, ls, arrow = LINK_STYLE[link.kind]
        style = dict(arrowstyle=arrow, mutation_scale=13, color=color, lw=1.2, linestyle=ls, zorder=2)
        ctrl = link.visible(lay)
        codes = [MPath.MOVETO] + [MPath.CURVE3 if len(ctrl) == 3 else MPath.CURVE4] * (len(ctrl) - 1)
        a = FancyArrowPatch(path=MPath(ctrl, codes), **style)
        a.set_clip_on(False)
        ax.add_patch(a)

    taken = [_box(x, y, *lay.size[n], 0.02) for n, (x, y) in lay.pos.items()]
    labels = []
    for j, link in enumerate(lay.links):
        if not link.anchors:
            continue
        t = ax.text(0, 0, _link_text(graph, link), fontsize=EDGE_FONT, color=_link_color(graph, link),
                    zorder=5, bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1.0), **common)
        w, h = _size_inches(t, renderer)
        cx, cy = _place_label(link.anchors, w, h, taken, curves, j, lay.curve(link, 160))
        t.set_position((cx, cy))
        taken.append(_box(cx, cy, w, h))
        labels.append((link, t))

    _fit(fig, ax, renderer)
    top, left, bottom = ax.get_ylim()[1], ax.get_xlim()[0], ax.get_ylim()[0]
    ax.text(sum(ax.get_xlim()) / 2, top, f"{graph.name or 'graph'} (target {graph.target_name})",
            fontsize=11, ha="center", va="bottom", clip_on=False)
    cut = [f"{e.src}→{e.dst}" for e in graph.edges if e.gate.kind == "cutoff"]
    if cut:
        per_line = max(1, int((ax.get_xlim()[1] - left) / 0.9))
        rows = [", ".join(cut[i:i + per_line]) for i in range(0, len(cut), per_line)]
        ax.text(left, bottom, "cut off (not drawn): " + ",\n".join(rows), fontsize=EDGE_FONT,
                color="#777777", ha="left", va="top", clip_on=False)
    _fit(fig, ax, renderer)
    return Picture(fig, lay, patches, labels)


def _fit(fig, ax, renderer) -> None:
    """Limits and figure size around everything drawn, at 1 inch per unit."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    bb = Bbox.union([a.get_window_extent(renderer) for a in (*ax.texts, *ax.patches)])
    x0, y0 = ax.get_xlim()[0], ax.get_ylim()[0]
    _set(fig, ax, x0 + bb.x0 / DPI - MARGIN, x0 + bb.x1 / DPI + MARGIN,
         y0 + bb.y0 / DPI - MARGIN, y0 + bb.y1 / DPI + MARGIN)


def _set(fig, ax, x0, x1, y0, y1) -> None:
    fig.set_size_inches(x1 - x0, y1 - y0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
