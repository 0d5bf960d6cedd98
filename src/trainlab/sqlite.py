"""SQLite files shared by processes that start at once (MLflow's store, Optuna's study)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext


def creation_lock(url: str) -> AbstractContextManager:
    """A file lock beside the database of a `sqlite:///` URL (no lock for any other URL).

    Opening a new database creates its tables through Alembic migrations, and two processes doing so at
    once fail ("duplicate column", "UNIQUE constraint failed: alembic_version"): hold this while opening.
    """
    if not url.startswith("sqlite:///"):
        return nullcontext()
    from filelock import FileLock

    return FileLock(url.removeprefix("sqlite:///") + ".lock")
