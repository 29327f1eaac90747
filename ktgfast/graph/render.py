"""Text summaries and pictures of graphs, in the spirit of the thesis's figures:
models as boxes, the label as its own node, edges labelled by loss and gate."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..edges import GATE_COLORS, LABEL
from .spec import Edge, Graph
from .ssl import dst_view, src_view


def summary(graph: Graph) -> str:
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
        lines.append(f"  {n.name:<{w}}  {n.model}{opts}  [{state}]{extra}")
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
    """Write a picture: ``.dot`` text, or ``.png``/``.svg`` via graphviz's ``dot``
    when installed, else drawn with networkx + matplotlib."""
    path = Path(path)
    dot_text = to_dot(graph)
    if path.suffix == ".dot":
        path.write_text(dot_text)
        return path
    if shutil.which("dot"):
        subprocess.run(["dot", f"-T{path.suffix.lstrip('.')}", "-o", str(path)], input=dot_text,
                       text=True, check=True)
        return path
    return _render_matplotlib(graph, path)


def _render_matplotlib(graph: Graph, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    g = nx.MultiDiGraph()
    g.add_node(LABEL)
    g.add_nodes_from(graph.node_names())
    for e in graph.edges:
        g.add_edge(e.src, e.dst)
    for n in graph.nodes:  # members feed their ensemble: drawn as plain arrows
        g.add_edges_from((m, n.name) for m in graph.members(n.name))
    pos = nx.circular_layout(graph.node_names())
    pos[LABEL] = (0.0, 0.0) if len(graph.nodes) > 2 else (0.0, 1.0)
    fig, ax = plt.subplots(figsize=(2.6 + 1.6 * len(graph.nodes), 2.4 + 1.4 * len(graph.nodes)))
    colors = ["#f4b6b6" if graph.node(n).is_ensemble else "#dddddd" if not graph.learns(n) else "#cfe3ff"
              for n in graph.node_names()]
    nx.draw_networkx_nodes(g, pos, nodelist=graph.node_names(), node_shape="s", node_size=2600,
                           node_color=colors, edgecolors="black", ax=ax)
    nx.draw_networkx_nodes(g, pos, nodelist=[LABEL], node_size=1600, node_color="#fff2c6",
                           edgecolors="black", ax=ax)
    labels = {n.name: f"{n.name}\n{n.model}" for n in graph.nodes}
    labels[LABEL] = "ŷ"
    nx.draw_networkx_labels(g, pos, labels, font_size=9, ax=ax)
    for e in graph.edges:
        color = {"gray70": "#b3b3b3", "darkgreen": "#006400"}.get(GATE_COLORS[e.gate.kind],
                                                                   GATE_COLORS[e.gate.kind])
        nx.draw_networkx_edges(
            g, pos, edgelist=[(e.src, e.dst)], edge_color=color, arrows=True, arrowsize=16,
            node_size=2600, connectionstyle="arc3,rad=0.18", ax=ax,
            style="dashed" if e.gate.kind == "cutoff" else "solid",
        )
        (x0, y0), (x1, y1) = pos[e.src], pos[e.dst]
        # label a bit off the straight line, on the side the arc bends to
        mx, my = x0 * 0.4 + x1 * 0.6, y0 * 0.4 + y1 * 0.6
        nx_, ny_ = (y1 - y0) * 0.12, -(x1 - x0) * 0.12
        ax.text(mx + nx_, my + ny_, edge_label(e, graph), color=color, fontsize=8, ha="center",
                va="center", bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
    emas = [(n.ema_of, n.name) for n in graph.nodes if n.ema_of is not None]
    if emas:
        g.add_edges_from(emas)
        nx.draw_networkx_edges(g, pos, edgelist=emas, edge_color="teal", style="dashed", arrows=True,
                               arrowsize=16, node_size=2600, connectionstyle="arc3,rad=-0.18", ax=ax)
    members = [(m, n.name) for n in graph.nodes for m in graph.members(n.name)]
    if members:
        nx.draw_networkx_edges(g, pos, edgelist=members, edge_color="#c04040", style="dotted",
                               arrows=False, node_size=2600, ax=ax)
    ax.set_title(f"{graph.name or 'graph'} (target {graph.target_name})")
    ax.axis("off")
    ax.margins(0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
