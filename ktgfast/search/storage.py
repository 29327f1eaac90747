"""Where a study lives: a journal file by default (embedded, resumable, safe
for several local processes), PostgreSQL for many machines (heartbeats recover
the trials of dead workers).  SQLite with several workers is refused."""
from __future__ import annotations

from pathlib import Path

import optuna

HEARTBEAT_S = 10       # a RUNNING trial without a heartbeat for
GRACE_S = 30           # this long belongs to a dead worker
MAX_RETRY = 3          # and is retried (as a new trial) this many times


RETRY_OF = "retry_of"  # system attr of a retry: the number of the dead trial it replaces


def retry_dead_trial(study: optuna.Study, trial) -> None:
    """Heartbeat callback: queue a fresh copy of a dead worker's trial (same
    sampled parameters, no rung records, so ASHA sees it as new)."""
    chain = trial.system_attrs.get("retry_chain", 0)
    if chain >= MAX_RETRY:
        return
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params,
        distributions=trial.distributions,
        system_attrs={RETRY_OF: trial.number, "retry_chain": chain + 1}))


def describe(url: str) -> str:
    if "://" in url and "@" in url:  # hide a password in logs
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def resolve_url(storage: str | None, study_dir: Path) -> str:
    """The storage URL: a journal file inside the study folder by default."""
    if storage is None:
        return f"journal:{study_dir / 'journal.log'}"
    return storage


def open_storage(url: str, workers: int = 1):
    """An Optuna storage for ``url``; clear errors for what cannot work."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:"):
        if workers > 1:
            raise ValueError(
                f"storage {url!r} with {workers} workers: SQLite locks the whole database on "
                "every write, so parallel workers fail with 'database is locked'. Use the default "
                "journal file (omit --storage) for local workers, or postgresql://... for many machines")
        return optuna.storages.RDBStorage(url)
    if url.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2.
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise ValueError("PostgreSQL storage needs psycopg2: pip install psycopg2-binary") from None
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=retry_dead_trial,
                engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}})
        except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds
            raise ValueError(f"cannot open storage {describe(url)}: {exc}") from None
    raise ValueError(f"unsupported storage {describe(url)!r}; allowed: journal:PATH (default), "
                     "postgresql://user:pass@host/db, sqlite:///file.db (one worker)")
