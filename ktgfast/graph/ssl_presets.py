"""Semi-supervised methods as graphs (the thesis, ch. 5, figs. 5.1-5.2).

Nodes are numbered from 1 as in the thesis; node 1 is the target.  Every
graph has the supervised CE on the labelled batch; the other edges act on the
unlabelled batch (``ssl.py``).  Views: the target end sees ζ1, the source end
ζ2.  FixMatch uses ζ1 strong / ζ2 weak (Sohn et al. 2020; the defaults); the Π-model, Mean
Teacher and Pseudo-Label default to two independent weak draws
(``views="weak"``, as in their papers and the thesis's diverse space), and
``views="strong"`` gives them FixMatch's perturbations.

The Π-model and Mean Teacher ramp their consistency weight up with the sigmoid
ramp exp(-5 (1 - t)²) over the first 25 % of training by default, as their
papers do (Laine & Aila 2017: 80 of 300 epochs; Tarvainen & Valpola 2017);
``rampup="none"`` turns it off (docs/rampup.md).
"""
from __future__ import annotations

from ..edges import LABEL
from .presets import preset_rampup, register_preset
from .spec import AUTO_MODEL, Edge, Gate, Graph, Node
from .ssl import TPL_TAU

VIEW_PAIRS = {"weak": ("weak", "weak2"), "strong": ("weak", "strong")}  # (ζ2 src, ζ1 dst)


def _views(views: str, preset: str) -> dict:
    if views not in VIEW_PAIRS:
        raise ValueError(f"{preset}: views = {views!r}; allowed: {', '.join(VIEW_PAIRS)}")
    src, dst = VIEW_PAIRS[views]
    return {"src_view": src, "dst_view": dst}


def _gate(gate: str, preset: str) -> Gate:
    allowed = ("through", "linear")
    if gate not in allowed:
        raise ValueError(f"{preset}: gate = {gate!r}; allowed: {', '.join(allowed)} "
                         "(linear ramps the unlabelled loss up from 0)")
    return Gate(gate)


CONSISTENCY_RAMP = "sigmoid"     # the Π-model's and Mean Teacher's default ramp-up
CONSISTENCY_RAMP_LENGTH = 0.25   # fraction of training


def _graph(nodes: list[Node], edges: list[Edge], target: str = "node1", rampup=None) -> Graph:
    return Graph(nodes, [Edge(LABEL, "node1", "ce"), *edges], target, semi_supervised=True,
                 rampup=rampup)


@register_preset("ssl-supervised")
def ssl_supervised(model: str = AUTO_MODEL) -> Graph:
    """The supervised baseline of SSL (fig. 5.1): CE on the labelled batch only;
    the unlabelled images are not used."""
    return _graph([Node("node1", model)], [])


@register_preset("pi-model")
def pi_model(model: str = AUTO_MODEL, weight: float = 1.0, views: str = "weak",
             gate: str = "through", rampup: str | None = CONSISTENCY_RAMP,
             rampup_length: float = CONSISTENCY_RAMP_LENGTH) -> Graph:
    """Π-model (fig. 5.2a): one node, a consistency self-loop
    ``KL(f(θ1, x+ζ2) ‖ f(θ1, x+ζ1))`` (eq. 5.1) with weight ``weight``,
    ramped up by ``rampup`` over the first ``rampup_length`` of training."""
    return _graph([Node("node1", model)],
                  [Edge("node1", "node1", "kl", _gate(gate, "pi-model"), weight=weight,
                        **_views(views, "pi-model"))],
                  rampup=preset_rampup(rampup, rampup_length, "pi-model"))


@register_preset("mean-teacher")
def mean_teacher(model: str = AUTO_MODEL, weight: float = 1.0, views: str = "weak",
                 gate: str = "through", target: str = "node1", rampup: str | None = CONSISTENCY_RAMP,
                 rampup_length: float = CONSISTENCY_RAMP_LENGTH) -> Graph:
    """Mean Teacher (fig. 5.2b): node 1 learns, node 2 is its EMA (eq. 5.2,
    α = config.ema_decay), consistency edge node 2 → node 1, ramped up by
    ``rampup`` over the first ``rampup_length`` of training."""
    if target not in ("node1", "node2"):
        raise ValueError(f"mean-teacher: target = {target!r}; allowed: node1 (student), node2 (EMA)")
    nodes = [Node("node1", model), Node("node2", model, ema_of="node1")]
    edges = [Edge("node2", "node1", "kl", _gate(gate, "mean-teacher"), weight=weight,
                  **_views(views, "mean-teacher"))]
    return _graph(nodes, edges, target, preset_rampup(rampup, rampup_length, "mean-teacher"))


@register_preset("pseudo-label")
def pseudo_label(model: str = AUTO_MODEL, weight: float = 1.0, views: str = "weak",
                 gate: str = "through") -> Graph:
    """Pseudo-Label (fig. 5.2c): CE of node 1 on ζ1 to the one-hot arg-max of
    its own prediction on ζ2 (eqs. 5.3-5.4), no threshold."""
    return _graph([Node("node1", model)],
                  [Edge("node1", "node1", "pl", _gate(gate, "pseudo-label"), weight=weight,
                        **_views(views, "pseudo-label"))])


@register_preset("fixmatch")
def fixmatch(model: str = AUTO_MODEL, weight: float = 1.0, tau: float = TPL_TAU) -> Graph:
    """FixMatch (fig. 5.2d): thresholded pseudo-label self-loop (eq. 5.5), the
    pseudo-label and its confidence from the weak view (ζ2), the CE on the
    strong view (ζ1); the masked sum is divided by the whole unlabelled batch.
    ``weight`` is FixMatch's λ_u."""
    if not 0 <= tau <= 1:
        raise ValueError(f"fixmatch: tau = {tau!r}; a probability threshold must be in [0, 1]")
    return _graph([Node("node1", model)],
                  [Edge("node1", "node1", "pl", Gate("threshold", tau=tau), weight=weight,
                        src_view="weak", dst_view="strong")])
