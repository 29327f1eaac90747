"""Where a graph's picture puts things: node centres, the curve of every drawn
connection and the candidate anchors of its label.  Pure geometry, no drawing
(``render.py`` draws it), deterministic, in inches.

The picture shows what the graph figures of the thesis (ch. 3, figs. 3.3,
3.4, 3.7; Minami et al. 2020, "Knowledge Transfer Graph for Deep
Collaborative Learning") show: the label ŷ as a node of its own with an edge
into every model node, the models as nodes, each edge's loss and gate written
on it.  The arrangement is ours: all nodes on one convex polygon, ŷ at the
top, ensemble nodes opposite it, the model nodes in graph order
counter-clockwise between them.  On a convex polygon a straight chord never
passes through a third node, so single edges are straight; the two directions
of a pair are two arcs bent to either side (matplotlib's ``arc3``), each with
its label on its own side; a self-loop (a node on two views) is a loop on the
node's outer side.

A label anchor is a point on its curve plus the unit normal ``(nx, ny)`` of
the side the label goes to; ``label_centre`` puts the label's box beside the
point, clear of the tangent there, so it never covers its own curve (a
quadratic Bézier lies on one side of each of its tangents: an arc's label goes
to the other, bulging side)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..edges import LABEL

LOOP_SPREAD = math.radians(32)  # half-angle between a loop's two feet
LABEL_GAP = 0.06                # inches between a curve and its label
BULGE = 0.5                     # arc3 bend of each direction of a pair: its middle is
BULGE_STEP = 0.4                # BULGE/4 inches off the chord; each further edge of
MAX_RAD = 0.25                  # one direction bends BULGE_STEP/4 more
EDGE_TS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78)      # label positions along an edge,
LABEL_EDGE_TS = (0.72, 0.62, 0.8, 0.5, 0.4, 0.3)    # preferred first; ŷ's near their node


@dataclass(frozen=True)
class Anchor:
    x: float
    y: float
    nx: float
    ny: float


@dataclass(frozen=True)
class Link:
    """One drawn connection.  ``kind``: ``edge`` (``index`` into graph.edges),
    ``ema`` (the EMA relation, Tarvainen & Valpola 2017) or ``member`` (a model
    feeding an ensemble node, thesis eq. 4.10).  ``rad``: arc3 curvature (0:
    straight); a loop has ``loop``: the four control points of a cubic Bézier."""

    src: str
    dst: str
    kind: str
    index: int | None
    rad: float
    loop: tuple[tuple[float, float], ...] | None
    anchors: tuple[Anchor, ...]

    def controls(self, pos) -> list[tuple[float, float]]:
        """The Bézier control points of the curve (centre to centre for arcs)."""
        if self.loop is not None:
            return list(self.loop)
        (x0, y0), (x1, y1) = pos[self.src], pos[self.dst]
        return [(x0, y0), _arc_control(x0, y0, x1, y1, self.rad), (x1, y1)]

    def visible(self, lay: "Layout", pad: float = 0.02) -> list[tuple[float, float]]:
        """The control points of the part of the curve outside both nodes'
        shapes (``pad`` inches clear of them): what is drawn, arrow head at
        its end."""
        ctrl = self.controls(lay.pos)
        if self.loop is not None:
            return ctrl
        t0 = _exit(ctrl, lambda p: lay.inside(self.src, p, pad), 0.0, 0.5)
        t1 = _exit(ctrl, lambda p: lay.inside(self.dst, p, pad), 1.0, 0.5)
        return sub_bezier(ctrl, t0, t1)


@dataclass(frozen=True)
class Layout:
    pos: dict[str, tuple[float, float]]
    size: dict[str, tuple[float, float]]   # box width, height per node (inches)
    links: list[Link]

    def curve(self, link: Link, n: int = 48) -> list[tuple[float, float]]:
        """``n`` points along the drawn part of a link's curve."""
        ctrl = link.visible(self)
        return [bezier(ctrl, i / (n - 1)) for i in range(n)]

    def inside(self, name: str, p, pad: float = 0.0) -> bool:
        """Whether ``p`` is in a node's shape grown by ``pad`` (ŷ: an ellipse;
        models: a box)."""
        (x, y), (w, h) = self.pos[name], self.size[name]
        dx, dy = abs(p[0] - x), abs(p[1] - y)
        if name == LABEL:
            return (dx / (w / 2 + pad)) ** 2 + (dy / (h / 2 + pad)) ** 2 <= 1
        return dx <= w / 2 + pad and dy <= h / 2 + pad


def _exit(ctrl, inside, t_in: float, t_out: float) -> float:
    """Where a curve leaves a convex shape between ``t_in`` (inside) and
    ``t_out`` (outside, as for any two distinct non-overlapping nodes), by
    bisection."""
    if not inside(bezier(ctrl, t_in)):
        return t_in
    for _ in range(30):
        mid = (t_in + t_out) / 2
        t_in, t_out = (mid, t_out) if inside(bezier(ctrl, mid)) else (t_in, mid)
    return t_out


def _split(ctrl, t):
    """De Casteljau: the control points of the curve's parts before and after ``t``."""
    left, right, pts = [ctrl[0]], [ctrl[-1]], list(ctrl)
    while len(pts) > 1:
        pts = [((1 - t) * a[0] + t * b[0], (1 - t) * a[1] + t * b[1]) for a, b in zip(pts, pts[1:])]
        left.append(pts[0])
        right.append(pts[-1])
    return left, right[::-1]


def sub_bezier(ctrl, t0: float, t1: float):
    """The control points of the curve between ``t0`` and ``t1``."""
    _, tail = _split(ctrl, t0)
    head, _ = _split(tail, (t1 - t0) / (1 - t0) if t0 < 1 else 0.0)
    return head


def bezier(ctrl, t: float) -> tuple[float, float]:
    """De Casteljau's point at ``t`` of a Bézier curve of any degree."""
    pts = list(ctrl)
    while len(pts) > 1:
        pts = [((1 - t) * a[0] + t * b[0], (1 - t) * a[1] + t * b[1]) for a, b in zip(pts, pts[1:])]
    return pts[0]


def _tangent(ctrl, t: float) -> tuple[float, float]:
    k = len(ctrl) - 1
    d = [(k * (b[0] - a[0]), k * (b[1] - a[1])) for a, b in zip(ctrl, ctrl[1:])]
    return bezier(d, t) if len(d) > 1 else d[0]


def _arc_control(x0, y0, x1, y1, rad):
    """matplotlib's ``arc3`` control point: the midpoint moved by ``rad`` times
    the chord, to the right of the direction of travel."""
    dx, dy = x1 - x0, y1 - y0
    return ((x0 + x1) / 2 + rad * dy, (y0 + y1) / 2 - rad * dx)


def estimate_size(text: str, fontsize: float = 9.0) -> tuple[float, float]:
    """A text box's size in inches without a renderer (0.6 em per character)."""
    lines = text.split("\n")
    em = fontsize / 72
    return (0.6 * em * max(map(len, lines)) + 0.3, 1.25 * em * len(lines) + 0.25)


def polygon_order(graph) -> list[str]:
    """ŷ first, then the vertices counter-clockwise: model nodes in graph order,
    ensemble nodes at the vertex opposite ŷ."""
    models = [n.name for n in graph.nodes if not n.is_ensemble]
    ens = [n.name for n in graph.nodes if n.is_ensemble]
    total = 1 + len(models) + len(ens)
    at = max(1, min(total // 2, len(models) + 1)) - 1  # model slots before the ensemble(s)
    return [LABEL, *models[:at], *ens, *models[at:]]


def layout(graph, size: dict[str, tuple[float, float]] | None = None, gap: float | None = None) -> Layout:
    """Positions and curves of ``graph``'s picture.  ``size``: each node's box
    (width, height) in inches (``LABEL`` included), measured by the renderer;
    estimated from the text when missing.  ``gap``: the free space between the
    boxes of two neighbouring nodes; by default 1.7 inches, more where there
    are more than two drawn connections per node (their labels need room)."""
    size = dict(size or {})
    for n in graph.nodes:
        size.setdefault(n.name, estimate_size(f"{n.name}\n{n.model}"))
    size.setdefault(LABEL, estimate_size("ŷ", 14))
    order = polygon_order(graph)
    count = len(order)
    if gap is None:
        gap = 1.7 * max(1.0, math.sqrt(len(connections(graph)) / (2 * count)))
    side = max(max(size[n]) for n in order) + gap  # neighbour distance
    radius = side / 2 if count == 2 else side / (2 * math.sin(math.pi / count))
    pos = {}
    for k, name in enumerate(order):
        a = math.pi / 2 + 2 * math.pi * k / count
        pos[name] = (_clean(radius * math.cos(a)), _clean(radius * math.sin(a)))
    links = _links(graph, pos, size)
    return Layout(pos=pos, size=size, links=links)


def _clean(v: float) -> float:
    return 0.0 if abs(v) < 1e-9 else round(float(v), 9)


def connections(graph) -> list[tuple[str, str, str, int | None]]:
    """(src, dst, kind, edge index) of everything drawn; cutoff edges carry
    nothing and are left out (the picture lists them in a footnote)."""
    out = [(e.src, e.dst, "edge", i) for i, e in enumerate(graph.edges) if e.gate.kind != "cutoff"]
    out += [(n.ema_of, n.name, "ema", None) for n in graph.nodes if n.ema_of is not None]
    out += [(m, n.name, "member", None) for n in graph.nodes for m in graph.members(n.name)]
    return out


def _links(graph, pos, size) -> list[Link]:
    conns = connections(graph)
    seen: dict[tuple[str, str], int] = {}
    links = []
    for src, dst, kind, index in conns:
        j = seen.get((src, dst), 0)
        seen[(src, dst)] = j + 1
        labelled = kind != "member"
        if src == dst:
            links.append(_loop(src, kind, index, j, pos, size, labelled))
            continue
        chord = math.dist(pos[src], pos[dst])
        if any(s == dst and d == src for s, d, *_ in conns):  # a pair: both bend, to either side
            rad = min(MAX_RAD, (BULGE + BULGE_STEP * j) / chord)
        else:  # a lone direction: straight, further edges alternate sides
            rad = 0.0 if j == 0 else (1 if j % 2 else -1) * min(MAX_RAD, BULGE_STEP * ((j + 1) // 2) / chord)
        ctrl = [pos[src], _arc_control(*pos[src], *pos[dst], rad), pos[dst]]
        ts = LABEL_EDGE_TS if src == LABEL else EDGE_TS
        anchors = _anchors(ctrl, ts, rad, pos) if labelled else ()
        links.append(Link(src, dst, kind, index, rad, None, anchors))
    return links


def _outward(name, pos) -> float:
    """The angle pointing away from the polygon's centre at a node."""
    x, y = pos[name]
    cx = sum(p[0] for p in pos.values()) / len(pos)
    cy = sum(p[1] for p in pos.values()) / len(pos)
    return math.atan2(y - cy, x - cx) if (x, y) != (cx, cy) else -math.pi / 2


def _box_exit(w, h, a) -> tuple[float, float]:
    """Where a ray from a box's centre at angle ``a`` leaves the box."""
    c, s = math.cos(a), math.sin(a)
    k = min(w / 2 / abs(c) if abs(c) > 1e-9 else math.inf, h / 2 / abs(s) if abs(s) > 1e-9 else math.inf)
    return k * c, k * s


def _loop(name, kind, index, j, pos, size, labelled) -> Link:
    """The ``j``-th self-loop of a node: on its outer side, further loops turned
    further around the node (alternating sides)."""
    step = (j + 1) // 2 * (1 if j % 2 else -1)
    u = _outward(name, pos) + step * 2.4 * LOOP_SPREAD
    (x, y), (w, h) = pos[name], size[name]
    reach = 0.9
    feet = []
    for a in (u + LOOP_SPREAD, u - LOOP_SPREAD):
        ex, ey = _box_exit(w + 0.08, h + 0.08, a)
        feet.append(((x + ex, y + ey), (x + ex + reach * math.cos(a), y + ey + reach * math.sin(a))))
    (a0, c0), (a1, c1) = feet
    ctrl = (a0, c0, c1, a1)
    anchors = ()
    if labelled:
        px, py = bezier(ctrl, 0.5)
        anchors = (Anchor(px, py, math.cos(u), math.sin(u)),)
    return Link(name, name, kind, index, 0.0, ctrl, anchors)


def _anchors(ctrl, ts, rad, pos) -> tuple[Anchor, ...]:
    """Anchors on a curve at the fractions ``ts``: an arc's on its bulging side;
    a straight edge's on the side away from the picture's centre first (at the
    first three fractions), then the other."""
    cx = sum(p[0] for p in pos.values()) / len(pos)
    cy = sum(p[1] for p in pos.values()) / len(pos)
    near, far = [], []
    for t in ts:
        px, py = bezier(ctrl, t)
        tx, ty = _tangent(ctrl, t)
        norm = math.hypot(tx, ty) or 1.0
        rx, ry = ty / norm, -tx / norm  # right of the direction of travel
        if rad != 0:
            s = 1.0 if rad > 0 else -1.0
            near.append(Anchor(px, py, s * rx, s * ry))
            continue
        s = 1.0 if (px - cx) * rx + (py - cy) * ry >= 0 else -1.0
        near.append(Anchor(px, py, s * rx, s * ry))
        far.append(Anchor(px, py, -s * rx, -s * ry))
    return tuple(near[:3] + far[:3] + near[3:] + far[3:])


def label_centre(anchor: Anchor, w: float, h: float, curve=(), gap: float = LABEL_GAP) -> tuple[float, float]:
    """The centre of a ``w`` x ``h`` label box beside ``anchor``, moved out
    along the normal.  At most as far as makes the box ``gap`` clear of the
    tangent at the anchor (the box's half-extent along the normal is
    |nx| w/2 + |ny| h/2), which clears the whole curve; nearer where ``curve``
    (points of it) stays ``gap`` clear of the box all the same, as on the
    outside of a bend."""
    far = gap + abs(anchor.nx) * w / 2 + abs(anchor.ny) * h / 2
    pts = np.asarray(curve, dtype=float).reshape(-1, 2)
    for d in np.arange(gap + min(w, h) / 2, far, 0.02) if len(pts) else ():
        cx, cy = anchor.x + d * anchor.nx, anchor.y + d * anchor.ny
        if not ((np.abs(pts[:, 0] - cx) < w / 2 + gap) & (np.abs(pts[:, 1] - cy) < h / 2 + gap)).any():
            return float(cx), float(cy)
    return anchor.x + far * anchor.nx, anchor.y + far * anchor.ny
