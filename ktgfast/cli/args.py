"""Small argument parsers shared by the sub-commands."""
from __future__ import annotations

import yaml


class UsageError(ValueError):
    """A malformed command line: printed as one line, exit code 2."""


def key_values(pairs: list[str], flag: str, example: str) -> dict[str, str]:
    """``["k=3", ...]`` -> ``{"k": "3"}``; a pair without ``=`` is one clear line."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"{flag} {pair!r}: expected KEY=VALUE (e.g. {example})")
        k, v = pair.split("=", 1)
        out[k] = v
    return out


def graph_params(pairs: list[str]) -> dict:
    """``--graph-arg`` values, read as YAML (``k=3`` -> 3, ``models=[a,b]`` -> a list)."""
    out = {}
    for k, v in key_values(pairs, "--graph-arg", "k=3").items():
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise UsageError(f"--graph-arg {k}={v}: the value is not valid YAML "
                             "(quote it, or write a list as [a,b])") from None
    return out


def count_or_fraction(text: str) -> int | float:
    """``10000`` -> a count, ``0.2`` -> a fraction."""
    value = float(text)
    return int(value) if value.is_integer() and value >= 1 else value
