"""``ktgfast graph list | show | render``."""
from __future__ import annotations

import argparse

from .args import UsageError, graph_params


def run(args: argparse.Namespace) -> int:
    from ..graph import list_presets, render, resolve_graph, summary, to_dot, validate
    from ..models import model_options

    if args.action == "list":
        from ..graph.presets import describe_preset

        for name in list_presets():
            text, params = describe_preset(name)
            print(f"{name:<20} {text}\n{'':<20} parameters (--graph-arg KEY=VALUE): "
                  f"{', '.join(params) or 'none'}")
        return 0
    if not args.graph:
        raise UsageError(f"graph {args.action} needs a preset (ktgfast graph list) or a YAML file")
    graph = validate(resolve_graph(args.graph, **graph_params(args.graph_arg)), model_options)
    if args.action == "show":
        print(summary(graph))
        if args.dot:
            print(to_dot(graph))
    else:
        out = args.output or f"{graph.name or 'graph'}.png"
        print(f"wrote {render(graph, out)}")
    return 0


def add(sub, method: str | None = None) -> None:
    p = sub.add_parser("graph", help="list, show or render a graph (preset or YAML)",
                       description="List the graph presets, print a graph, or draw it.")
    p.add_argument("action", choices=["list", "show", "render"],
                   help="list: every preset with its parameters; show: nodes and edges; "
                        "render: a picture")
    p.add_argument("graph", nargs="?", help="preset name or YAML file (show, render)")
    p.add_argument("--graph-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="preset parameter, e.g. k=3 or models=[resnet32,wrn28_2] (repeatable)")
    p.add_argument("--dot", action="store_true", help="show: also print the Graphviz DOT source")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="render: picture path, .png, .svg or .dot (default: GRAPH.png)")
    p.set_defaults(run=run)
