"""Reading a user's YAML file, with errors that fit on one line."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def yaml_problem(exc: yaml.YAMLError) -> str:
    """``line 3, column 1: expected ',' or ']' (while parsing a flow sequence)``."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "")


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """The parsed file; a missing file or a syntax error is one line naming
    the file (``what``: "graph file", "config file", ...)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {str(path)!r} is a folder, not a YAML file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {str(path)!r} is not a text file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid YAML: {yaml_problem(exc)}") from None
