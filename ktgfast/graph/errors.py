"""The error of graphs that cannot be trained."""


class GraphError(ValueError):
    """A graph that cannot be trained, with the offending field path."""
