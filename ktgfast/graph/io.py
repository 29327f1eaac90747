"""YAML load/save and name-or-file resolution of graphs."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..yamlfile import read_yaml
from .presets import PRESETS, get_preset
from .spec import Graph


def load_graph(path: str | os.PathLike) -> Graph:
    path = Path(path)
    data = read_yaml(path, "graph file")
    graph = Graph.from_dict(data, where=f"{path.name}")
    graph.source = path.name  # validate's errors name the file
    return graph


def save_graph(graph: Graph, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(graph.to_dict(), sort_keys=False))


def resolve_graph(name_or_file: str, **params) -> Graph:
    """A preset name (with parameters) or a YAML file path."""
    if name_or_file in PRESETS:
        return get_preset(name_or_file, **params)
    if name_or_file.endswith((".yaml", ".yml")) or os.path.exists(name_or_file):
        if params:
            raise ValueError("graph parameters apply to presets only, not to a YAML file")
        return load_graph(name_or_file)
    raise ValueError(
        f"{name_or_file!r} is neither a graph preset nor a YAML file; presets: {', '.join(sorted(PRESETS))}"
    )
