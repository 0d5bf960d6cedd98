"""Databases shared by processes that start at once (MLflow's store, Optuna's study): one at a time
creates the tables.

Opening a new database creates its tables through Alembic migrations, and two processes doing so at once
fail ("duplicate column", "UNIQUE constraint failed: alembic_version" on SQLite; "relation
alembic_version already exists" on PostgreSQL). Opening under `creation_lock` makes them take turns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

# PostgreSQL advisory locks are named by a 64-bit integer, per database: this one is trainlab's.
ADVISORY_LOCK_KEY = 0x7472_6169_6E6C_6162  # b"trainlab"


def creation_lock(url: str) -> AbstractContextManager:
    """A file lock beside the database of a `sqlite:///` URL (which is then set up for several writers:
    trainlab.tracking.sqlite), an advisory lock in a PostgreSQL database, no lock for any other URL (an
    MLflow server creates its own tables)."""
    if url.startswith("sqlite:///"):
        return _file_lock(url)
    if url.startswith("postgresql"):
        return _advisory_lock(url)
    return nullcontext()


@contextmanager
def _file_lock(url: str) -> Iterator[None]:
    from filelock import FileLock

    from trainlab.tracking.sqlite import prepare

    with FileLock(url.removeprefix("sqlite:///") + ".lock"):
        prepare(url)
        yield


@contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    """Held on a connection of its own; PostgreSQL releases it if this process dies."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(
                    sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
    finally:
        engine.dispose()
