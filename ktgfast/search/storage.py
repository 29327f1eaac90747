"""Where a study lives, and who is working on it.

Storages (one table, ``KINDS``): a journal file by default (embedded,
resumable, shared by any number of local workers and commands), PostgreSQL for
many machines (heartbeats), SQLite for one worker at a time.  Every URL is
checked in two steps, both before any training: :func:`check_url` (no side
effects: the scheme, the path, the driver) and :func:`open_storage` (creates
the journal's folder, writes to it, connects to the server); both raise one
``ValueError`` line naming the URL (password hidden), what failed and what is
allowed.

Workers: every worker process holds a *lease*, a file in the storage's
workers folder that it keeps ``flock``-ed for its lifetime, and records the
lease's name on each trial it runs (system attribute ``worker``).  The kernel
drops the lock when the process dies, SIGKILL included, so any process tells a
live worker from a dead one without clocks: a RUNNING trial whose lease is free
belongs to a dead worker.  PostgreSQL workers on other machines are judged by
their heartbeats instead (``HEARTBEAT_S``, ``GRACE_S``).  A dead worker's trial
is failed and queued again (:func:`retry_dead_trial`), at most ``MAX_RETRY``
times in a chain.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

HEARTBEAT_S = 10       # PostgreSQL: a RUNNING trial without a heartbeat for
GRACE_S = 30           # this long belongs to a dead worker
MAX_RETRY = 3          # a dead worker's trial is retried (as a new trial) this many times

RETRY_OF = "retry_of"  # system attr of a retry: the number of the dead trial it replaces
WORKER = "worker"      # system attr of a trial: {"lease", "host", "pid"} of the worker running it

ALLOWED = ("allowed: journal:PATH (the default, a journal in the study folder: local workers and "
           "commands), postgresql://user:pass@host/db (many machines), sqlite:///FILE.db "
           "(one worker at a time)")


def retry_dead_trial(study: optuna.Study, trial) -> int | None:
    """Queue a fresh copy of a dead worker's trial (same sampled parameters, no
    rung records, so ASHA sees it as new); the chain stops at ``MAX_RETRY``.
    Also Optuna's heartbeat-stale callback of the PostgreSQL storage."""
    chain = trial.system_attrs.get("retry_chain", 0)
    if chain >= MAX_RETRY:
        return None
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={RETRY_OF: trial.number, "retry_chain": chain + 1}))
    return chain + 1


def describe(url: str) -> str:
    """``url`` fit for a log line: a password is hidden."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def resolve_url(storage: str | None, study_dir: Path) -> str:
    """The storage URL: a journal file inside the study folder by default."""
    if storage is None:
        return f"journal:{study_dir / 'journal.log'}"
    return storage


def _refuse(url: str, what: str) -> ValueError:
    return ValueError(f"storage {describe(url)!r}: {what}; {ALLOWED}")


def _scrub(url: str, exc: BaseException) -> str:
    """An error's text on one line, without the URL's password (drivers may
    quote the URL) or SQLAlchemy's wrapping (the driver's own words)."""
    from sqlalchemy.engine import make_url

    text = str(getattr(exc, "orig", None) or exc)

    with contextlib.suppress(Exception):
        password = make_url(url).password
        if password:
            text = text.replace(str(password), "***")
    return " ".join(str(text).split())  # one line


# ------------------------------------------------------------------- journal
def journal_path(url: str) -> Path:
    return Path(url[len("journal:"):]).expanduser()


def _check_journal(url: str, workers: int) -> None:
    path = journal_path(url)
    if not str(path).strip() or str(path) == ".":
        raise _refuse(url, "no file named after 'journal:'")
    if path.is_dir():
        raise _refuse(url, f"{str(path)!r} is a folder, not a journal file")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise _refuse(url, f"cannot create its folder: {str(ancestor)!r} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise _refuse(url, f"folder {str(ancestor)!r} is not writable")


def _probe_folder(url: str, folder: Path) -> None:
    """Create ``folder`` and a file in it (the journal's lock and the workers'
    leases live there): root passes ``os.access`` on read-only places."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _refuse(url, f"cannot write in folder {str(folder)!r} ({exc.strerror or exc})") from None


def _open_journal(url: str, workers: int):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    _check_journal(url, workers)
    path = journal_path(url)
    _probe_folder(url, path.parent)
    try:
        with open(path, "ab"):
            pass
        _check_journal_head(url, path)
        storage = JournalStorage(JournalFileBackend(str(path)))
        storage.get_all_studies()  # replays the file: a non-journal file fails here
    except OSError as exc:
        raise _refuse(url, f"cannot write {str(path)!r} ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise _refuse(url, f"{str(path)!r} is not an Optuna journal ({exc})") from None
    return storage


def _check_journal_head(url: str, path: Path) -> None:
    """A file that is not empty starts with an Optuna journal record (Optuna
    skips a broken last line, a write in progress, so a one-line foreign file
    would only fail later, inside a worker)."""
    with open(path, "rb") as f:
        head = f.readline(1 << 20)
    if not head.strip():
        return
    try:
        record = json.loads(head)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise _refuse(url, f"{str(path)!r} is not an Optuna journal (its first line is no journal record)")


def _journal_workers(url: str, study_dir: Path | None) -> Path:
    path = journal_path(url)
    return path.parent / f"{path.name}.workers"


# -------------------------------------------------------------------- SQLite
def _sqlite_file(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).database
    except Exception as exc:  # noqa: BLE001 - sqlalchemy's ArgumentError and friends
        raise _refuse(url, f"not a database URL ({exc})") from None


def _check_sqlite(url: str, workers: int) -> None:
    db = _sqlite_file(url)
    if not db or db == ":memory:":
        raise _refuse(url, "an in-memory database lives in one process only; name a file "
                           "(sqlite:///study.db)")
    if workers > 1:
        raise ValueError(
            f"storage {describe(url)!r} with {workers} workers: SQLite locks the whole database on "
            "every write, so parallel workers fail with 'database is locked'. Use the default "
            "journal file (omit --storage) for local workers, or postgresql://... for many machines")
    folder = Path(db).expanduser().parent
    if not folder.is_dir():
        raise _refuse(url, f"folder {str(folder)!r} of the database file does not exist")


def _open_sqlite(url: str, workers: int):
    _check_sqlite(url, workers)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds
        raise _refuse(url, f"cannot open it ({_scrub(url, exc)})") from None


def _sqlite_workers(url: str, study_dir: Path | None) -> Path:
    db = Path(_sqlite_file(url)).expanduser()
    return db.parent / f"{db.name}.workers"


# ---------------------------------------------------------------- PostgreSQL
def _psycopg2_url(url: str) -> str:
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2.
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


def _check_postgres(url: str, workers: int) -> None:
    from sqlalchemy.engine import make_url

    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise _refuse(url, "PostgreSQL needs psycopg2, which is not installed "
                           "(pip install psycopg2-binary)") from None
    try:
        parsed = make_url(_psycopg2_url(url))
    except Exception as exc:  # noqa: BLE001
        raise _refuse(url, f"not a database URL ({_scrub(url, exc)})") from None
    if not parsed.database:
        raise _refuse(url, "no database named (postgresql://user:pass@host/DB)")


def _open_postgres(url: str, workers: int):
    _check_postgres(url, workers)
    try:
        return optuna.storages.RDBStorage(
            _psycopg2_url(url), heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=retry_dead_trial,
            engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}})
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds
        raise _refuse(url, f"cannot connect ({_scrub(url, exc)})") from None


def _postgres_workers(url: str, study_dir: Path | None) -> Path | None:
    # Leases of this machine's workers; other machines are judged by heartbeats.
    return None if study_dir is None else Path(study_dir) / "workers"


# --------------------------------------------------------------------- table
@dataclass(frozen=True)
class Kind:
    """One kind of storage: how its URLs start, how it is checked (no side
    effects) and opened, where its workers' leases live, and whether several
    commands may work on one study at once (``joinable``) or a live worker
    makes a second command be refused."""

    name: str
    prefixes: tuple[str, ...]
    check: Callable[[str, int], None]
    open: Callable[[str, int], object]
    workers_dir: Callable[[str, Path | None], Path | None]
    joinable: bool
    heartbeats: bool


KINDS = (
    Kind("journal", ("journal:",), _check_journal, _open_journal, _journal_workers, True, False),
    Kind("postgresql", ("postgresql://", "postgresql+psycopg2://", "postgres://"), _check_postgres,
         _open_postgres, _postgres_workers, True, True),
    Kind("sqlite", ("sqlite:",), _check_sqlite, _open_sqlite, _sqlite_workers, False, False),
)


def kind_of(url: str) -> Kind:
    for kind in KINDS:
        if url.startswith(kind.prefixes):
            return kind
    hint = f" (a file? write journal:{url})" if "://" not in url and ":" not in url else ""
    raise ValueError(f"unsupported storage {describe(url)!r}{hint}; {ALLOWED}")


def check_url(url: str, workers: int = 1) -> Kind:
    """Refuse ``url`` now if it cannot work (without creating or connecting anything)."""
    kind = kind_of(url)
    kind.check(url, workers)
    return kind


def open_storage(url: str, workers: int = 1):
    """An Optuna storage for ``url``; one clear ``ValueError`` for what cannot work."""
    return kind_of(url).open(url, workers)


def workers_dir(url: str, study_dir: Path | None) -> Path | None:
    """The folder of the leases of the workers of ``url`` on this machine."""
    return kind_of(url).workers_dir(url, study_dir)


# -------------------------------------------------------------------- leases
def _try_lock(path: Path) -> bool | None:
    """True: ``path``'s lease is held by a live process; False: it is free (its
    owner is dead); None: there is no such lease."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class WorkerLease:
    """This process's lease in ``folder``: created locked (written under a
    temporary name, locked, then renamed, so a visible lease is never free
    while its owner lives) and removed on exit."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = self.folder / f"{self.name}.lease"
        self.fd: int | None = None

    def record(self) -> dict:
        return {"lease": self.name, "host": socket.gethostname(), "pid": os.getpid()}

    def __enter__(self) -> "WorkerLease":
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{self.name}.tmp"
        self.fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.write(self.fd, json.dumps(self.record()).encode())
        os.replace(tmp, self.path)
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def live_leases(folder: Path | None) -> list[str]:
    """Names of the leases in ``folder`` whose workers are alive."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(p.name[:-len(".lease")] for p in Path(folder).glob("*.lease") if _try_lock(p))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_leases(folder: Path | None) -> None:
    """Leases of dead workers are litter once their trials are handled; so is
    the temporary file of a worker of this host killed while it created its lease."""
    if folder is None or not Path(folder).is_dir():
        return
    for p in Path(folder).glob("*.lease"):
        if _try_lock(p) is False:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    host = socket.gethostname()
    for p in Path(folder).glob(".*.tmp"):
        parts = p.name[1:-len(".tmp")].rsplit("-", 2)
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


@contextlib.contextmanager
def study_lock(folder: Path):
    """The local workers' lock: asking for a trial (and recording its worker),
    judging dead workers and writing the study's outputs happen under it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def stale_heartbeats(study: optuna.Study) -> set[int]:
    """Trial ids whose heartbeat is older than the grace period (storages with heartbeats)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled  # the study's storage may be cached

    if not is_heartbeat_enabled(study._storage):
        return set()
    return set(study._storage._get_stale_trial_ids(study._study_id))


def why_dead(trial, kind: Kind, folder: Path | None, stale: set[int]) -> str | None:
    """Why ``trial`` (RUNNING) has no worker any more, or None while it may
    have one.  Local storages: call under :func:`study_lock` (a trial asked but
    not yet recorded is then impossible)."""
    rec = trial.system_attrs.get(WORKER)
    held = None
    if rec is not None and folder is not None:
        held = _try_lock(Path(folder) / f"{rec['lease']}.lease")
    if held:
        return None
    who = f"process {rec['pid']} on {rec['host']}" if rec else "its worker"
    if held is False:
        return f"{who} is not alive"
    if kind.heartbeats:  # a worker of another machine, or not yet recorded
        return f"heartbeat of {who} stale" if trial._trial_id in stale else None
    return f"{who} is not alive" if rec else "no live worker recorded it"
