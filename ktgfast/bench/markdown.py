"""Tables regenerated in place (``ktgfast bench --markdown-into FILE``): the
Markdown report of suite NAME replaces what stands between the lines
``<!-- ktgfast bench: NAME -->`` and ``<!-- /ktgfast bench: NAME -->`` of
FILE (``benchmarks/README.md``), so documented numbers come from a saved run,
not from pasting."""
from __future__ import annotations

from pathlib import Path


def begin(name: str) -> str:
    return f"<!-- ktgfast bench: {name} -->"


def end(name: str) -> str:
    return f"<!-- /ktgfast bench: {name} -->"


def check_sections(path: str | Path, names) -> None:
    """Raise ValueError, before any suite runs, when ``path`` lacks the
    markers of one of ``names``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--markdown-into {p}: no such file")
    text = p.read_text()
    for name in names:
        i, j = text.find(begin(name)), text.find(end(name))
        if i < 0 or j < i:
            raise ValueError(f"--markdown-into {p}: no section for suite {name!r}; add the lines "
                             f"{begin(name)} and {end(name)} where its tables go")


def replace_sections(text: str, sections: dict[str, str]) -> str:
    for name, body in sections.items():
        b, e = begin(name), end(name)
        i, j = text.find(b), text.find(e)
        text = text[:i + len(b)] + "\n" + body.rstrip() + "\n" + text[j:]
    return text


def write_sections(path: str | Path, sections: dict[str, str]) -> None:
    check_sections(path, sections)
    p = Path(path)
    p.write_text(replace_sections(p.read_text(), sections))
