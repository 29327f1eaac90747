"""Knowledge-transfer graphs as data: nodes, edges, gates, presets, YAML, pictures."""
from .io import load_graph, resolve_graph, save_graph
from .presets import PRESETS, get_preset, list_presets, register_preset
from . import ssl_presets  # noqa: F401  (registers the semi-supervised presets)
from .render import render, summary, to_dot
from .spec import AUTO_MODEL, ENSEMBLE_MODEL, LOSS_DESIGNS, Edge, Gate, Graph, Node
from .validate import GraphError, validate

__all__ = [
    "AUTO_MODEL", "ENSEMBLE_MODEL", "LOSS_DESIGNS", "Edge", "Gate", "Graph", "GraphError", "Node", "PRESETS", "get_preset",
    "list_presets", "load_graph", "register_preset", "render", "resolve_graph", "save_graph",
    "summary", "to_dot", "validate",
]
