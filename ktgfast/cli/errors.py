"""How a failed command reads: one line in the CLI's words, and its exit code.

Bad input (a ValueError or a missing file) exits 2 before any work, as
argparse does; a run that failed (NaN/Inf loss, a corrupt dataset) exits 1.
``--debug`` or ``KTGFAST_DEBUG=1`` shows the traceback instead."""
from __future__ import annotations

import os
import re

# The Python API's words -> the CLI's, for messages raised below the CLI.
CLI_WORDS: tuple = (
    (r"get_dataset\('([\w-]+)', root='([^']*)', download=True\)", r"--data \1 --data-root \2 --download true"),
    (r"\bdownload=True\b", "--download true"),
    (r"\bpoint root at\b", "point --data-root at"),
    (r"\bneeds root=", "needs --data-root "),
    (r"\buse amp=none\b", "use --amp none"),
    # config.sync_bn = True (--sync-bn) -> --sync-bn = True; config.eval_splits -> --eval-splits
    (r"\bconfig\.([a-z_]+)( = [^ ;:]+)? \(--[\w-]+\)", lambda m: _flag(m[1]) + (m[2] or "")),
    (r"\bconfig\.([a-z_]+)", lambda m: _flag(m[1])),
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def cli_words(text: str) -> str:
    for pattern, repl in CLI_WORDS:
        text = re.sub(pattern, repl, text)
    return text


def exit_code(exc: BaseException) -> int | None:
    """2 for bad input, 1 for a run that failed, None for a bug (traceback)."""
    from ..data.integrity import IntegrityError
    from ..train.run import NonFiniteLossError

    if isinstance(exc, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return 2
    if isinstance(exc, (NonFiniteLossError, IntegrityError)):
        return 1
    return None


def debug_wanted(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("KTGFAST_DEBUG", "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    """The exception as one line: multi-line messages (YAML parsers) joined."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return cli_words(text or type(exc).__name__)
