"""Waiting for an event instead of sleeping for a guessed time.

A test that needs another process to reach a state (a marker file written, a
trial RUNNING in a storage, a heartbeat gone stale) polls for that state.  The
overall limit only keeps a broken test from hanging forever: it is generous
(minutes) and never part of what is asserted, so a loaded machine only makes the
wait longer, never makes it fail.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

#: The default overall limit of a wait, in seconds (only reached when the event
#: never happens; ``KTGFAST_TEST_WAIT_S`` overrides it).
WAIT_S = float(os.environ.get("KTGFAST_TEST_WAIT_S", "900"))


def wait_for(event: Callable[[], T], what: str, *, check: Callable[[], None] | None = None,
             timeout: float | None = None, poll: float = 0.05) -> T:
    """The first truthy value of ``event()``, polled every ``poll`` seconds.

    ``check()`` runs before every poll and raises (an ``assert``) when waiting
    makes no sense any more, e.g. the process that should cause the event has
    died.  ``TimeoutError`` naming ``what`` when ``timeout`` (default
    :data:`WAIT_S`) seconds pass without the event."""
    limit = WAIT_S if timeout is None else timeout
    deadline = time.monotonic() + limit
    while True:
        if check is not None:
            check()
        value = event()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {limit:.0f} s")
        time.sleep(poll)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` so that a reader who sees ``path`` sees all of it (a
    marker checked with ``exists()`` is never read half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
