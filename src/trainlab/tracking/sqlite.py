"""SQLite stores (MLflow's `sqlite:///mlruns/mlflow.db`, Optuna's `sqlite:///multirun/optuna.db`) in
write-ahead-logging mode, for several writers.

In SQLite's default rollback-journal mode a writer locks out readers too. In WAL mode readers never wait
for a writer (the MLflow UI or a report reads while runs write) and a write is one append to the log.
Writers still take turns: MLflow's connections wait up to 20 s for the lock, Optuna's 120 s
(trainlab.run.trial), and trainlab retries MLflow writes beyond that (trainlab.tracking.spool). WAL needs a
local file system (its shared-memory index does not work over NFS): beyond one machine use PostgreSQL.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)


def prepare(url: str) -> None:
    """Put the SQLite file of a `sqlite:///` URL in WAL mode (a setting kept in the file), creating its
    folder; under the store's creation lock, before MLflow or Optuna open it."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=60)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.DatabaseError as err:  # not a database: MLflow or Optuna say so when they open it
        log.debug("%s: not put in WAL mode: %s", path, err)
        return
    finally:
        connection.close()
    if mode != "wal":
        log.warning("%s: SQLite kept journal mode %s (WAL needs a local file system)", path, mode)
